//go:build !linux

package main

import "errors"

func sendFrames(int, [6]byte, [][]byte) error {
	return errors.New("raw-syn needs Linux (AF_PACKET)")
}

package main

import (
	"fmt"
	"syscall"
)

// sendFrames writes whole Ethernet frames on the interface through an
// AF_PACKET socket that receives nothing (protocol 0).
func sendFrames(ifindex int, dstMAC [6]byte, frames [][]byte) error {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
	if err != nil {
		return fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], dstMAC[:])
	for _, frame := range frames {
		if err := syscall.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

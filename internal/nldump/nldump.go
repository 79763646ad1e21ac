// Package nldump retries netlink dumps the kernel reports as interrupted,
// for the mechanisms that list links, routes, FDB entries or port flags.
package nldump

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Attempts bounds the retries of an interrupted dump.
const Attempts = 5

// Retry runs a netlink dump again while the kernel reports it was
// interrupted (the table changed during the dump: netlink v1.3 then returns
// possibly inconsistent data with ErrDumpInterrupted). After the last attempt
// the error stands: callers must not act on a partial list.
func Retry[T any](dump func() (T, error)) (T, error) {
	var out T
	var err error
	for range Attempts {
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, fmt.Errorf("netlink dump interrupted %d times in a row (the host's tables keep changing): %w", Attempts, err)
}

//go:build !linux

package probe

import (
	"errors"
	"syscall"
)

// controlDevice returns nil when device is empty; binding to a device is
// supported only on Linux.
func controlDevice(device string) func(network, address string, c syscall.RawConn) error {
	if device == "" {
		return nil
	}
	return func(_, _ string, _ syscall.RawConn) error {
		return &bindError{device: device, err: errors.ErrUnsupported}
	}
}

package probe

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// controlDevice returns a socket control function that binds the socket to
// device with SO_BINDTODEVICE, or nil when device is empty.
func controlDevice(device string) func(network, address string, c syscall.RawConn) error {
	if device == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, device)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return &bindError{device: device, err: serr}
		}
		return nil
	}
}

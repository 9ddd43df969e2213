package probe

import "fmt"

// bindError reports a failure to bind a socket to a device.
type bindError struct {
	device string
	err    error
}

func (e *bindError) Error() string {
	return fmt.Sprintf("bind to device %q: %v", e.device, e.err)
}

func (e *bindError) Unwrap() error { return e.err }

package auth_test

import (
	"context"
	"testing"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
)

// TestDeadlineInterceptor: a request without a deadline gets the default;
// a client's own deadline, shorter or longer, stands.
func TestDeadlineInterceptor(t *testing.T) {
	const d = time.Minute
	icpt := auth.DeadlineInterceptor(d)
	for _, tc := range []struct {
		name   string
		client time.Duration // 0: no deadline
		want   time.Duration
	}{
		{"none", 0, d},
		{"shorter", time.Second, time.Second},
		{"longer", time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.client)
				defer cancel()
			}
			var got time.Duration
			_, err := icpt(ctx, nil, nil, func(ctx context.Context, _ any) (any, error) {
				dl, ok := ctx.Deadline()
				if !ok {
					t.Fatal("the handler's context has no deadline")
				}
				got = time.Until(dl)
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got > tc.want || got < tc.want-time.Second {
				t.Errorf("the handler has %v left, want %v", got, tc.want)
			}
		})
	}
}

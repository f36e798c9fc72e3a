package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A step that fails because the coordinator ended its BatchNorm exchange,
// or because it was cancelled, is expected; an exchange that fails
// otherwise, or any other failure, is not.
func TestBNEnded(t *testing.T) {
	exchange := func(err error) error {
		// as reduceBN, then the model's TrainStep wrap it
		return fmt.Errorf("train step: synchronised batchnorm slot 2: %w", fmt.Errorf("%w: %w", errBNExchange, err))
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"the step is over (a rollback, a new generation)", exchange(status.Error(codes.FailedPrecondition, "coordinator: batchnorm: stale step: the run was rolled back")), true},
		{"the call was cancelled", exchange(status.Error(codes.Canceled, "context canceled")), true},
		{"the worker's context", exchange(context.Canceled), true},
		{"the coordinator went away", exchange(status.Error(codes.Unavailable, "connection reset by peer")), false},
		{"the step's deadline", exchange(status.Error(codes.DeadlineExceeded, "deadline exceeded")), false},
		{"a cancelled push, not the exchange", fmt.Errorf("push step 3: %w", context.Canceled), false},
		{"another failure", errors.New("train step: loss is NaN"), false},
	} {
		if got := bnEnded(c.err); got != c.want {
			t.Errorf("%s: bnEnded(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

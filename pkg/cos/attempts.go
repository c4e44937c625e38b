package cos

import (
	"context"
	"time"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// AttemptObserver, when the Options.Observer also implements it, is told
// about every HTTP request the client sends, retries included, where
// Observer sees each operation once: the operation name, whether the
// request repeats an earlier attempt of the same operation (an SDK retry
// after a 5xx, throttle or reset connection, or the one retry with a fresh
// token after COS refused one), the bytes of its body, and, when it is
// done, how long it took until the response headers and its error. Both
// calls are made on the request's goroutine and must not block.
type AttemptObserver interface {
	AttemptStarted(op string, retry bool, bodyBytes int64)
	AttemptDone(op string, bodyBytes int64, d time.Duration, err error)
}

// attemptsKey holds, in an operation's context, how many attempts it has
// made so far.
type attemptsKey struct{}

// refreshRetryKey marks the context of an operation that is run again with
// a fresh token (see Client.attempt): even its first attempt is a retry.
type refreshRetryKey struct{}

// observeAttempts adds two Finalize middlewares around the SDK's retry loop
// ("Retry"): one before it gives the operation an attempt counter, one
// after it runs once per attempt and reports it.
func observeAttempts(obs AttemptObserver) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		count := middleware.FinalizeMiddlewareFunc("CosmountAttemptCount",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				return next.HandleFinalize(context.WithValue(ctx, attemptsKey{}, new(int)), in)
			})
		if err := stack.Finalize.Insert(count, "Retry", middleware.Before); err != nil {
			return err
		}
		observe := middleware.FinalizeMiddlewareFunc("CosmountAttemptObserver",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				op := middleware.GetOperationName(ctx)
				retry := ctx.Value(refreshRetryKey{}) != nil
				if n, ok := ctx.Value(attemptsKey{}).(*int); ok {
					*n++
					retry = retry || *n > 1
				}
				var body int64
				if req, ok := in.Request.(*smithyhttp.Request); ok && req.ContentLength > 0 {
					body = req.ContentLength
				}
				obs.AttemptStarted(op, retry, body)
				start := time.Now()
				out, md, err := next.HandleFinalize(ctx, in)
				obs.AttemptDone(op, body, time.Since(start), err)
				return out, md, err
			})
		return stack.Finalize.Insert(observe, "Retry", middleware.After)
	}
}

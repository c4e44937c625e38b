package iam

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Error kinds. Every *Error wraps exactly one of them, so callers classify a
// failure with errors.Is(err, iam.ErrNotEligible) and friends.
var (
	// ErrNotEligible: the compute-resource token is valid, but its
	// cluster/namespace/service account/pod may not use the trusted profile
	// (IAM code BXNIM0398E). Retrying with the same token cannot help.
	ErrNotEligible = errors.New("trusted profile not eligible")
	// ErrBadCredentials: IAM rejected the credentials (unknown API key,
	// invalid or expired token, unknown profile, any other 400/401/403).
	ErrBadCredentials = errors.New("credentials rejected")
	// ErrTransient: IAM could not be reached or answered 5xx/429/408; the same
	// request may succeed later.
	ErrTransient = errors.New("transient failure")
	// ErrUnexpected: IAM (or something pretending to be it) answered in a way
	// this client does not understand: another 4xx status, a malformed 200 body,
	// a token without expiry or already expired. Usually a configuration error
	// such as a wrong base URL; not retried.
	ErrUnexpected = errors.New("unexpected response")
)

// Error is a failed token exchange. It never contains a token, API key or
// client secret: the fields hold IAM's own code, message and details, and any
// text taken from a response body is sanitized first.
type Error struct {
	// StatusCode is the HTTP status, or 0 when no response arrived.
	StatusCode int
	// ErrorCode is IAM's code, e.g. "BXNIM0398E"; empty if the body was not IAM's JSON envelope.
	ErrorCode string
	// ErrorMessage is IAM's errorMessage, or sanitized, truncated body text
	// when the body was not JSON.
	ErrorMessage string
	// ErrorDetails is IAM's errorDetails; for BXNIM0398E it names the token as
	// <cluster>:<namespace>:<serviceaccount>:<pod>.
	ErrorDetails string
	// RequestID is context.requestId from the body, else the transaction-id header.
	RequestID string
	// RetryAfter is the server's Retry-After hint (429/503), zero if none.
	RetryAfter time.Duration

	kind error // one of the Err* kinds above
	err  error // underlying cause (network error, JSON error), may be nil
}

// Kind returns the error's kind: ErrNotEligible, ErrBadCredentials,
// ErrTransient or ErrUnexpected.
func (e *Error) Kind() error { return e.kind }

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("iam: token exchange failed (")
	b.WriteString(e.kind.Error())
	b.WriteString(")")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.ErrorCode != "" {
		b.WriteString(": ")
		b.WriteString(e.ErrorCode)
	}
	if e.ErrorMessage != "" {
		b.WriteString(": ")
		b.WriteString(e.ErrorMessage)
	}
	if e.ErrorDetails != "" {
		b.WriteString(" (details: ")
		b.WriteString(e.ErrorDetails)
		b.WriteString(")")
	}
	if e.err != nil {
		b.WriteString(": ")
		b.WriteString(e.err.Error())
	}
	if e.RequestID != "" {
		b.WriteString(" [request-id ")
		b.WriteString(e.RequestID)
		b.WriteString("]")
	}
	return b.String()
}

// Unwrap exposes both the kind and the underlying cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	if e.err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.err}
}

// Retryable reports whether err is worth retrying unchanged: a transient
// failure (network error, timeout, 5xx, 429). 400-class answers are not.
func Retryable(err error) bool { return errors.Is(err, ErrTransient) }

// retryAfter returns the Retry-After hint carried by err, if any.
func retryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

const maxErrorText = 256

// jwtPattern matches anything shaped like a JWT (the compute-resource token
// and IAM access tokens are JWTs), so such strings are removed from error
// text even when this client did not send them itself.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(\.[A-Za-z0-9_-]*)?`)

// sanitize makes text taken from an IAM response safe and short enough for an
// error string: secrets this request carried and JWT-shaped runs are redacted,
// control characters and runs of white space become one space, and the
// result is truncated to max bytes.
func sanitize(text string, secrets []string, max int) string {
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, "[REDACTED]")
		}
	}
	text = jwtPattern.ReplaceAllString(text, "[REDACTED]")
	var b strings.Builder
	space := false
	for _, r := range text {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' || r == ' ' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > max {
		cut := max
		for cut > 0 && !isRuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "..."
	}
	return out
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

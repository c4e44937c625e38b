// Package iam owns everything between cosmount and IBM Cloud IAM: the token
// exchange (trusted-profile cr-token grant and API-key grant), the token
// sources built on it, and their caching and refresh.
//
// Nothing in this package may log or format a token, API key or compute
// resource token; errors carry IAM's codes and messages only.
package iam

import (
	"context"
	"time"
)

// Token is an IAM access token and the instant after which it must not be used.
type Token struct {
	AccessToken string
	Expiry      time.Time
}

// Valid reports whether the token is non-empty and not past its expiry at now.
func (t Token) Valid(now time.Time) bool {
	return t.AccessToken != "" && now.Before(t.Expiry)
}

// Source hands out access tokens. Every component that talks to COS takes one.
type Source interface {
	Token(ctx context.Context) (Token, error)
}

// Invalidator is implemented by caching sources: after COS answered 403 to a
// token, Invalidate makes the next Token call exchange again.
type Invalidator interface {
	Invalidate()
}

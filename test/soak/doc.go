// Package soak holds cosmount's soak test: several writers at once through a
// real mount of the cosmount binary against the emulator, with access tokens
// that live a few seconds, a tenth of all COS requests failing (500, 503
// SlowDown, connection resets before and in the middle of a body, slow
// answers) and an IAM outage longer than two token lifetimes in the middle.
// At the end the bucket is compared with what every writer was told: a
// close or fsync that reported success must be in the bucket byte for byte,
// and nothing a writer was not told about may have happened.
//
// The short profile runs in `go test ./...` (make test); the long one is
// `make soak`. The package has no non-test code.
package soak

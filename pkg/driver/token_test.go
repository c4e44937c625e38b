package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/iam"
)

func TestPodToken(t *testing.T) {
	tests := []struct {
		name          string
		secrets, vctx map[string]string
		want          string
		code          codes.Code
	}{
		{name: "volume context", vctx: map[string]string{keyTokens: tokensJSON("iam", podTokenA)}, want: podTokenA},
		{name: "secrets first", secrets: map[string]string{keyTokens: tokensJSON("iam", podTokenB)}, vctx: map[string]string{keyTokens: tokensJSON("iam", podTokenA)}, want: podTokenB},
		{name: "several audiences", vctx: map[string]string{keyTokens: `{"vault":{"token":"x"},"iam":{"token":"` + podTokenA + `"}}`}, want: podTokenA},
		{name: "missing", vctx: map[string]string{}, code: codes.FailedPrecondition},
		{name: "empty", vctx: map[string]string{keyTokens: ""}, code: codes.FailedPrecondition},
		{name: "other audience", vctx: map[string]string{keyTokens: tokensJSON("vault", podTokenA)}, code: codes.FailedPrecondition},
		{name: "empty token", vctx: map[string]string{keyTokens: tokensJSON("iam", "")}, code: codes.FailedPrecondition},
		{name: "not JSON", vctx: map[string]string{keyTokens: "{" + podTokenA}, code: codes.InvalidArgument},
		{name: "wrong JSON shape", vctx: map[string]string{keyTokens: `{"iam":"` + podTokenA + `"}`}, code: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := podToken(tc.secrets, tc.vctx, "iam")
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("podToken = %v, want %v", err, tc.code)
				}
				if strings.Contains(err.Error(), podTokenA) {
					t.Error("the error quotes the token")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("podToken = %q, %v", got, err)
			}
		})
	}
}

func TestVerifyError(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", iam.ErrNotEligible), codes.PermissionDenied},
		{fmt.Errorf("x: %w", iam.ErrBadCredentials), codes.PermissionDenied},
		{fmt.Errorf("x: %w", iam.ErrTransient), codes.Unavailable},
		{fmt.Errorf("x: %w", iam.ErrUnexpected), codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("other"), codes.Internal},
	}
	for _, tc := range tests {
		if got := status.Code(toStatus(verifyError("the token", tc.err))); got != tc.want {
			t.Errorf("verifyError(%v) -> %v, want %v", tc.err, got, tc.want)
		}
	}
}

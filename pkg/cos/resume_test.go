package cos_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

// A GET whose connection is reset in the middle of the body asks for the
// rest (same ETag) and hands the caller the whole object; when that keeps
// failing the error is ErrUnavailable, not a bare ECONNRESET.
func TestGetBodyResumesAfterReset(t *testing.T) {
	env := emulatortest.Start(t)
	c := hmacClient(t, env)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if _, err := c.PutObject(ctx, env.Bucket, "obj", bytes.NewReader(data), int64(len(data)), cos.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	inj := env.COSFaults() // rules reset after 64 KiB of the body
	for _, tc := range []struct {
		name       string
		opts       cos.GetOptions
		want       []byte
		resets     int
		wantFailed bool
	}{
		{name: "whole object, two resets", want: data, resets: 2},
		{name: "range, one reset", opts: cos.GetOptions{Offset: 1000, Length: 500 << 10}, want: data[1000 : 1000+500<<10], resets: 1},
		{name: "resets without end", want: data, resets: 100, wantFailed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inj.Clear()
			if err := inj.FailNext(faults.Rule{Kind: faults.ResetMidBody, Count: tc.resets, Operation: "GetObject"}); err != nil {
				t.Fatal(err)
			}
			defer inj.Clear()
			rc, _, err := c.GetObject(ctx, env.Bucket, "obj", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if tc.wantFailed {
				if !errors.Is(err, cos.ErrUnavailable) {
					t.Fatalf("endless resets: %v, want ErrUnavailable", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes (want %d), err %v", len(got), len(tc.want), err)
			}
		})
	}
}

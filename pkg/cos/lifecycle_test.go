package cos_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

func TestAbortIncompleteUploadsRule(t *testing.T) {
	// A lifecycle "day" of a millisecond: the emulator applies the rule
	// when uploads are listed or started.
	env := emulatortest.Start(t, emulatortest.WithLifecycleDay(time.Millisecond))
	c := bearerClient(t, env)
	ctx := context.Background()
	if _, ok, err := c.AbortIncompleteUploadsDays(ctx, env.Bucket); err != nil || ok {
		t.Fatalf("before: rule %v, %v", ok, err)
	}
	if err := c.SetAbortIncompleteUploads(ctx, env.Bucket, 0); err == nil {
		t.Error("a rule of 0 days was accepted")
	}
	id, err := c.CreateMultipartUpload(ctx, env.Bucket, "abandoned", cos.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetAbortIncompleteUploads(ctx, env.Bucket, 1); err != nil {
		t.Fatal(err)
	}
	days, ok, err := c.AbortIncompleteUploadsDays(ctx, env.Bucket)
	if err != nil || !ok || days != 1 {
		t.Fatalf("after: %d days, %v, %v", days, ok, err)
	}
	time.Sleep(5 * time.Millisecond) // more than the rule's day
	if _, err := c.CreateMultipartUpload(ctx, env.Bucket, "next", cos.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadPart(ctx, env.Bucket, "abandoned", id, 1, strings.NewReader("x"), 1); !errors.Is(err, cos.ErrNotFound) {
		t.Errorf("a part for the abandoned upload after its rule's day: %v, want NoSuchUpload", err)
	}
}

package mounter

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// The mounter over its socket, the way the node plugin reaches it: the
// JSON messages carry the spec and credentials, status codes survive.
func TestMounterOverGRPC(t *testing.T) {
	needFUSE(t)
	state := stateDir(t)
	m := newTestMounter(t, state)
	sock := filepath.Join(state, "mounter.sock")
	ln, err := mounterapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	mounterapi.Register(srv, m)
	go srv.Serve(ln) //nolint:errcheck // ends at Stop
	t.Cleanup(srv.Stop)

	c, err := mounterapi.Dial("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := c.WaitReady(ctx)
	if err != nil || v.API != mounterapi.APIVersion {
		t.Fatalf("WaitReady = %+v, %v", v, err)
	}

	req := testRequest(t, m, "grpc")
	resp, err := c.Publish(ctx, req)
	if err != nil || resp.Action != mounterapi.ActionMounted {
		t.Fatalf("Publish = %+v, %v", resp, err)
	}
	if got := readMountFile(t, req.Spec.Target, "credsum"); got != sum("pod-token-one") {
		t.Error("the token did not arrive intact")
	}
	st, err := c.Status(ctx, &mounterapi.StatusRequest{Target: req.Spec.Target})
	if err != nil || st.State != mounterapi.StateHealthy || st.Spec.Options.UID != 1000 || !st.Spec.Options.AllowOther {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	bad := *req
	bad.Spec.Options.UploadConcurrency = 100
	_, err = c.Publish(ctx, &bad)
	wantCode(t, "bad option over gRPC", err, codes.InvalidArgument, "upload_concurrency")
	if _, err := c.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: req.Spec.Target}); err != nil {
		t.Fatal(err)
	}
	assertClean(t, m, req.Spec.Target, resp.Volume.PID)

	// No mounter at the socket: Unavailable, naming what is missing.
	gone, err := mounterapi.Dial("unix://" + filepath.Join(state, "nobody.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	_, err = gone.List(short, &mounterapi.ListRequest{})
	if err == nil {
		t.Fatal("a missing mounter answered")
	}
	wantCode(t, "missing mounter", err, codes.Unavailable, "cosmount mounter at "+filepath.Join(state, "nobody.sock"))
}

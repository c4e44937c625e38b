package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

func put(t *testing.T, s *Store, key, body string) cos.ObjectInfo {
	t.Helper()
	info, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body)), cos.PutOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return info
}

// listAll pages through a listing and returns every object key and prefix in order.
func listAll(t *testing.T, s *Store, o cos.ListOptions) (objs, prefixes []string, pages int) {
	t.Helper()
	for {
		p, err := s.List(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ob := range p.Objects {
			objs = append(objs, ob.Key)
		}
		prefixes = append(prefixes, p.CommonPrefixes...)
		if p.NextContinuationToken == "" {
			return
		}
		o.ContinuationToken = p.NextContinuationToken
	}
}

func TestListPagination(t *testing.T) {
	s := New()
	for _, k := range []string{"a", "b/1", "b/2", "b/3", "c/", "c/x/y", "d", "e/f", "ea"} {
		put(t, s, k, "x")
	}
	tests := []struct {
		name         string
		opts         cos.ListOptions
		wantObjs     []string
		wantPrefixes []string
		wantPages    int
	}{
		{"flat", cos.ListOptions{}, []string{"a", "b/1", "b/2", "b/3", "c/", "c/x/y", "d", "e/f", "ea"}, nil, 1},
		{"flat pages of 2", cos.ListOptions{MaxKeys: 2}, []string{"a", "b/1", "b/2", "b/3", "c/", "c/x/y", "d", "e/f", "ea"}, nil, 5},
		{"delimiter", cos.ListOptions{Delimiter: "/"}, []string{"a", "d", "ea"}, []string{"b/", "c/", "e/"}, 1},
		{"delimiter pages of 1 never repeat prefixes", cos.ListOptions{Delimiter: "/", MaxKeys: 1}, []string{"a", "d", "ea"}, []string{"b/", "c/", "e/"}, 6},
		{"prefix dir", cos.ListOptions{Prefix: "c/", Delimiter: "/"}, []string{"c/"}, []string{"c/x/"}, 1},
		{"prefix partial", cos.ListOptions{Prefix: "e", Delimiter: "/"}, []string{"ea"}, []string{"e/"}, 1},
		{"start after", cos.ListOptions{StartAfter: "c/x/y"}, []string{"d", "e/f", "ea"}, nil, 1},
		{"missing prefix", cos.ListOptions{Prefix: "zz/"}, nil, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, prefixes, pages := listAll(t, s, tc.opts)
			if !reflect.DeepEqual(objs, tc.wantObjs) || !reflect.DeepEqual(prefixes, tc.wantPrefixes) || pages != tc.wantPages {
				t.Errorf("got objs %v prefixes %v pages %d; want %v %v %d", objs, prefixes, pages, tc.wantObjs, tc.wantPrefixes, tc.wantPages)
			}
		})
	}
}

func TestGetRangesAndConditions(t *testing.T) {
	s := New()
	info := put(t, s, "k", "0123456789")
	tests := []struct {
		name    string
		opts    cos.GetOptions
		want    string
		wantErr error
	}{
		{"whole", cos.GetOptions{}, "0123456789", nil},
		{"range", cos.GetOptions{Offset: 2, Length: 3}, "234", nil},
		{"to end", cos.GetOptions{Offset: 7, Length: -1}, "789", nil},
		{"clamped", cos.GetOptions{Offset: 8, Length: 100}, "89", nil},
		{"beyond end", cos.GetOptions{Offset: 10, Length: 1}, "", cos.ErrInvalidRange},
		{"if-match ok", cos.GetOptions{IfMatch: info.ETag}, "0123456789", nil},
		{"if-match stale", cos.GetOptions{IfMatch: "nope"}, "", cos.ErrPreconditionFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, err := s.Get(context.Background(), "k", tc.opts)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			b, _ := io.ReadAll(rc)
			if string(b) != tc.want {
				t.Errorf("got %q want %q", b, tc.want)
			}
		})
	}
	if _, _, err := s.Get(context.Background(), "missing", cos.GetOptions{}); !errors.Is(err, cos.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
}

func TestPutConditions(t *testing.T) {
	s := New()
	ctx := context.Background()
	info := put(t, s, "k", "v1")
	if _, err := s.Put(ctx, "k", strings.NewReader("v2"), 2, cos.PutOptions{IfNoneMatch: "*"}); !errors.Is(err, cos.ErrPreconditionFailed) {
		t.Errorf("if-none-match on existing: %v", err)
	}
	if _, err := s.Put(ctx, "k", strings.NewReader("v2"), 2, cos.PutOptions{IfMatch: "other"}); !errors.Is(err, cos.ErrPreconditionFailed) {
		t.Errorf("if-match stale: %v", err)
	}
	if _, err := s.Put(ctx, "k", strings.NewReader("v2"), 2, cos.PutOptions{IfMatch: info.ETag}); err != nil {
		t.Errorf("if-match current: %v", err)
	}
}

func TestMultipart(t *testing.T) {
	ctx := context.Background()
	s := New()
	s.SetMinPartSize(4)
	id, err := s.CreateMultipart(ctx, "big", cos.PutOptions{Metadata: map[string]string{"Mode": "33188"}})
	if err != nil {
		t.Fatal(err)
	}
	var parts []cos.CompletedPart
	for i, body := range []string{"aaaa", "bbbb", "cc"} {
		p, err := s.UploadPart(ctx, "big", id, int32(i+1), strings.NewReader(body), int64(len(body)))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	info, err := s.CompleteMultipart(ctx, "big", id, parts)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 10 || !strings.HasSuffix(info.ETag, "-3") || info.Metadata["mode"] != "33188" {
		t.Errorf("info %+v", info)
	}
	body, _, _ := s.Object("big")
	if string(body) != "aaaabbbbcc" {
		t.Errorf("body %q", body)
	}
	rc, _, err := s.Get(ctx, "big", cos.GetOptions{Offset: 3, Length: 6})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if string(got) != "abbbbc" {
		t.Errorf("range across parts %q", got)
	}
	if s.PendingUploads() != 0 {
		t.Error("upload not removed")
	}

	// A small non-final part is refused at completion.
	id, _ = s.CreateMultipart(ctx, "small", cos.PutOptions{})
	p1, _ := s.UploadPart(ctx, "small", id, 1, strings.NewReader("a"), 1)
	p2, _ := s.UploadPart(ctx, "small", id, 2, strings.NewReader("b"), 1)
	if _, err := s.CompleteMultipart(ctx, "small", id, []cos.CompletedPart{p1, p2}); !errors.Is(err, cos.ErrEntityTooSmall) {
		t.Errorf("small part: %v", err)
	}
	if err := s.AbortMultipart(ctx, "small", id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadPart(ctx, "small", id, 3, strings.NewReader("c"), 1); !errors.Is(err, cos.ErrNotFound) {
		t.Errorf("part after abort: %v", err)
	}
}

func TestCopyDeleteCountsFaults(t *testing.T) {
	ctx := context.Background()
	s := New()
	if _, err := s.Put(ctx, "src", bytes.NewReader([]byte("x")), 1, cos.PutOptions{Metadata: map[string]string{"mode": "1"}}); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Copy(ctx, "src", "dst", cos.CopyOptions{}); err != nil || info.Metadata["mode"] != "1" {
		t.Fatalf("copy keep: %+v %v", info, err)
	}
	if info, err := s.Copy(ctx, "src", "src", cos.CopyOptions{ReplaceMetadata: true, Metadata: map[string]string{"mode": "2"}}); err != nil || info.Metadata["mode"] != "2" {
		t.Fatalf("copy replace: %+v %v", info, err)
	}
	if _, err := s.Copy(ctx, "src", "src", cos.CopyOptions{}); !errors.Is(err, cos.ErrInvalidArgument) {
		t.Errorf("self copy without replace: %v", err)
	}
	if err := s.DeleteMany(ctx, []string{"src", "dst", "never"}); err != nil {
		t.Fatal(err)
	}
	if len(s.Keys()) != 0 {
		t.Errorf("keys left %v", s.Keys())
	}
	boom := fmt.Errorf("boom: %w", cos.ErrUnavailable)
	s.FailOp(OpPut, boom)
	if _, err := s.Put(ctx, "k", strings.NewReader(""), 0, cos.PutOptions{}); !errors.Is(err, cos.ErrUnavailable) {
		t.Errorf("fault: %v", err)
	}
	s.SetFault(nil)
	if got := s.Count(OpPut); got != 2 {
		t.Errorf("put count %d", got)
	}
	if got := s.Count(OpCopy); got != 3 {
		t.Errorf("copy count %d", got)
	}
	s.ResetCounts()
	if len(s.Counts()) != 0 {
		t.Error("reset")
	}
}

func TestLatencyHonoursContext(t *testing.T) {
	s := New()
	put(t, s, "k", "x")
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Head(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("head with a canceled context during latency: %v", err)
	}
	s.SetLatency(time.Millisecond)
	if _, err := s.Head(context.Background(), "k"); err != nil {
		t.Fatalf("head with latency: %v", err)
	}
}

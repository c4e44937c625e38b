// Package memstore is an in-memory object store with S3 semantics (ListObjectsV2
// with delimiter and continuation, ranged and conditional GETs, multipart
// uploads with a minimum part size, server-side copy). It counts calls per
// operation and can inject failures, which makes it the fast test double for
// pkg/fs. It is safe for concurrent use.
package memstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

// Op names one ObjectStore method, for counters and failure injection.
type Op string

// The operations the store counts.
const (
	OpHead              Op = "Head"
	OpGet               Op = "Get"
	OpPut               Op = "Put"
	OpCreateMultipart   Op = "CreateMultipart"
	OpUploadPart        Op = "UploadPart"
	OpUploadPartCopy    Op = "UploadPartCopy"
	OpCompleteMultipart Op = "CompleteMultipart"
	OpAbortMultipart    Op = "AbortMultipart"
	OpList              Op = "List"
	OpCopy              Op = "Copy"
	OpDelete            Op = "Delete"
	OpDeleteMany        Op = "DeleteMany"
)

// DefaultMinPartSize is S3's minimum size of every multipart part but the last.
const DefaultMinPartSize = 5 << 20

// defaultMaxKeys is S3's page size when MaxKeys is 0.
const defaultMaxKeys = 1000

// FaultFunc decides whether a call fails: a non-nil result is returned by the
// call (after it was counted, before it has any effect).
type FaultFunc func(op Op, key string) error

// object is one stored object. The body is a list of immutable segments so a
// completed multipart upload does not have to copy its parts.
type object struct {
	segments     [][]byte
	size         int64
	etag         string
	lastModified time.Time
	contentType  string
	metadata     map[string]string
}

type upload struct {
	key         string
	contentType string
	metadata    map[string]string
	parts       map[int32]part
}

// part is a list of immutable segments, like an object's body, so that a
// copied part shares the source's memory.
type part struct {
	segments [][]byte
	size     int64
	etag     string
}

// Store is the in-memory object store.
type Store struct {
	mu          sync.Mutex
	objects     map[string]*object
	uploads     map[string]*upload
	nextUpload  int
	counts      map[Op]int64
	fault       FaultFunc
	minPartSize int64
	latency     time.Duration
	now         func() time.Time
}

// New returns an empty store with S3's 5 MiB minimum part size.
func New() *Store {
	return &Store{
		objects:     map[string]*object{},
		uploads:     map[string]*upload{},
		counts:      map[Op]int64{},
		minPartSize: DefaultMinPartSize,
		now:         time.Now,
	}
}

// SetMinPartSize changes the minimum size of non-final multipart parts.
func (s *Store) SetMinPartSize(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.minPartSize = n
}

// SetLatency makes every call take d, as a request over the network would;
// a call whose context ends first fails with the context's error.
func (s *Store) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetFault installs (or with nil removes) the failure injection hook.
func (s *Store) SetFault(f FaultFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// FailOp makes every call of op fail with err until the hook is replaced.
func (s *Store) FailOp(op Op, err error) {
	s.SetFault(func(o Op, _ string) error {
		if o == op {
			return err
		}
		return nil
	})
}

// Count reports how many times op was called since the last ResetCounts.
func (s *Store) Count(op Op) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// Counts returns a copy of all counters.
func (s *Store) Counts() map[Op]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Op]int64, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// ResetCounts zeroes all counters.
func (s *Store) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[Op]int64{}
}

// Object returns a stored object's body and info without counting a call.
func (s *Store) Object(key string) ([]byte, cos.ObjectInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, cos.ObjectInfo{}, false
	}
	return o.bytes(), o.info(key, true), true
}

// Keys returns all object keys in order, without counting a call.
func (s *Store) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedKeys()
}

// PendingUploads reports how many multipart uploads are neither completed nor aborted.
func (s *Store) PendingUploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.uploads)
}

// begin counts a call and runs the fault hook; it must be called without s.mu held.
func (s *Store) begin(ctx context.Context, op Op, key string) error {
	s.mu.Lock()
	s.counts[op]++
	f, latency := s.fault, s.latency
	s.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if f != nil {
		if err := f(op, key); err != nil {
			return err
		}
	}
	return nil
}

func opErr(op Op, key string, kind error, code string) error {
	return &cos.Error{Op: string(op), Bucket: "memstore", Key: key, Code: code, Kind: kind}
}

func (o *object) bytes() []byte {
	out := make([]byte, 0, o.size)
	for _, seg := range o.segments {
		out = append(out, seg...)
	}
	return out
}

func (o *object) info(key string, withMeta bool) cos.ObjectInfo {
	in := cos.ObjectInfo{Key: key, Size: o.size, ETag: o.etag, LastModified: o.lastModified}
	if withMeta {
		in.ContentType = o.contentType
		in.Metadata = copyMeta(o.metadata)
	}
	return in
}

// reader returns the bytes [off, off+n) of the body without copying.
// slice returns the segments holding n bytes from off, sharing memory.
func (o *object) slice(off, n int64) [][]byte {
	var out [][]byte
	for _, seg := range o.segments {
		l := int64(len(seg))
		if off >= l {
			off -= l
			continue
		}
		take := min(l-off, n)
		out = append(out, seg[off:off+take])
		n -= take
		off = 0
		if n == 0 {
			break
		}
	}
	return out
}

func (o *object) reader(off, n int64) io.Reader {
	var rs []io.Reader
	for _, seg := range o.segments {
		l := int64(len(seg))
		if off >= l {
			off -= l
			continue
		}
		take := l - off
		if take > n {
			take = n
		}
		rs = append(rs, bytes.NewReader(seg[off:off+take]))
		n -= take
		off = 0
		if n == 0 {
			break
		}
	}
	return io.MultiReader(rs...)
}

func copyMeta(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func (s *Store) sortedKeys() []string {
	keys := make([]string, 0, len(s.objects))
	for k := range s.objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Head returns an object's info with its metadata.
func (s *Store) Head(ctx context.Context, key string) (cos.ObjectInfo, error) {
	if err := s.begin(ctx, OpHead, key); err != nil {
		return cos.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return cos.ObjectInfo{}, opErr(OpHead, key, cos.ErrNotFound, "NotFound")
	}
	return o.info(key, true), nil
}

// Get returns (a range of) an object's body.
func (s *Store) Get(ctx context.Context, key string, g cos.GetOptions) (io.ReadCloser, cos.ObjectInfo, error) {
	if err := s.begin(ctx, OpGet, key); err != nil {
		return nil, cos.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, cos.ObjectInfo{}, opErr(OpGet, key, cos.ErrNotFound, "NoSuchKey")
	}
	if g.IfMatch != "" && g.IfMatch != o.etag {
		return nil, cos.ObjectInfo{}, opErr(OpGet, key, cos.ErrPreconditionFailed, "PreconditionFailed")
	}
	off, n := g.Offset, g.Length
	if off < 0 {
		return nil, cos.ObjectInfo{}, opErr(OpGet, key, cos.ErrInvalidArgument, "InvalidArgument")
	}
	if off > 0 || n > 0 {
		if off >= o.size {
			return nil, cos.ObjectInfo{}, opErr(OpGet, key, cos.ErrInvalidRange, "InvalidRange")
		}
	}
	if n <= 0 || off+n > o.size {
		n = o.size - off
	}
	return io.NopCloser(o.reader(off, n)), o.info(key, true), nil
}

func (s *Store) checkPut(op Op, key string, o putConds) error {
	cur, exists := s.objects[key]
	if o.ifNoneMatch == "*" && exists {
		return opErr(op, key, cos.ErrPreconditionFailed, "PreconditionFailed")
	}
	if o.ifMatch != "" && (!exists || cur.etag != o.ifMatch) {
		if !exists {
			return opErr(op, key, cos.ErrNotFound, "NoSuchKey")
		}
		return opErr(op, key, cos.ErrPreconditionFailed, "PreconditionFailed")
	}
	return nil
}

// putConds carries the conditional parts of PutOptions.
type putConds struct{ ifMatch, ifNoneMatch string }

// Put stores an object read from body (exactly size bytes).
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, p cos.PutOptions) (cos.ObjectInfo, error) {
	if err := s.begin(ctx, OpPut, key); err != nil {
		return cos.ObjectInfo{}, err
	}
	if key == "" {
		return cos.ObjectInfo{}, opErr(OpPut, key, cos.ErrInvalidArgument, "InvalidArgument")
	}
	data, err := readN(body, size)
	if err != nil {
		return cos.ObjectInfo{}, fmt.Errorf("memstore put %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkPut(OpPut, key, putConds{p.IfMatch, p.IfNoneMatch}); err != nil {
		return cos.ObjectInfo{}, err
	}
	o := &object{
		segments: [][]byte{data}, size: int64(len(data)), etag: md5hex(data),
		lastModified: s.now().UTC().Truncate(time.Second), contentType: p.ContentType, metadata: copyMeta(p.Metadata),
	}
	s.objects[key] = o
	return o.info(key, true), nil
}

func readN(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return nil, fmt.Errorf("negative size %d", size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("short body: %w", err)
	}
	return data, nil
}

// CreateMultipart starts a multipart upload and returns its id.
func (s *Store) CreateMultipart(ctx context.Context, key string, p cos.PutOptions) (string, error) {
	if err := s.begin(ctx, OpCreateMultipart, key); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextUpload++
	id := fmt.Sprintf("upload-%d", s.nextUpload)
	s.uploads[id] = &upload{key: key, contentType: p.ContentType, metadata: copyMeta(p.Metadata), parts: map[int32]part{}}
	return id, nil
}

// UploadPart stores one part; re-uploading a part number replaces it.
func (s *Store) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64) (cos.CompletedPart, error) {
	if err := s.begin(ctx, OpUploadPart, key); err != nil {
		return cos.CompletedPart{}, err
	}
	if num < 1 || num > 10000 {
		return cos.CompletedPart{}, opErr(OpUploadPart, key, cos.ErrInvalidArgument, "InvalidArgument")
	}
	data, err := readN(body, size)
	if err != nil {
		return cos.CompletedPart{}, fmt.Errorf("memstore upload part %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[uploadID]
	if !ok || u.key != key {
		return cos.CompletedPart{}, opErr(OpUploadPart, key, cos.ErrNotFound, "NoSuchUpload")
	}
	p := part{segments: [][]byte{data}, size: int64(len(data)), etag: md5hex(data)}
	u.parts[num] = p
	return cos.CompletedPart{PartNumber: num, ETag: p.etag}, nil
}

// UploadPartCopy stores bytes first..last of srcKey as a part, if srcKey's
// ETag is ifMatch (when set).
func (s *Store) UploadPartCopy(ctx context.Context, key, uploadID string, num int32, srcKey string, first, last int64, ifMatch string) (cos.CompletedPart, error) {
	if err := s.begin(ctx, OpUploadPartCopy, key); err != nil {
		return cos.CompletedPart{}, err
	}
	if num < 1 || num > 10000 {
		return cos.CompletedPart{}, opErr(OpUploadPartCopy, key, cos.ErrInvalidArgument, "InvalidArgument")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[uploadID]
	if !ok || u.key != key {
		return cos.CompletedPart{}, opErr(OpUploadPartCopy, key, cos.ErrNotFound, "NoSuchUpload")
	}
	src, ok := s.objects[srcKey]
	if !ok {
		return cos.CompletedPart{}, opErr(OpUploadPartCopy, srcKey, cos.ErrNotFound, "NoSuchKey")
	}
	if ifMatch != "" && strings.Trim(ifMatch, `"`) != src.etag {
		return cos.CompletedPart{}, opErr(OpUploadPartCopy, srcKey, cos.ErrPreconditionFailed, "PreconditionFailed")
	}
	if first < 0 || last < first || last >= src.size {
		return cos.CompletedPart{}, opErr(OpUploadPartCopy, srcKey, cos.ErrInvalidArgument, "InvalidArgument")
	}
	p := part{segments: src.slice(first, last-first+1), size: last - first + 1,
		// Unique per source version and range, without hashing the bytes.
		etag: md5hex([]byte(fmt.Sprintf("%s:%d-%d", src.etag, first, last)))}
	u.parts[num] = p
	return cos.CompletedPart{PartNumber: num, ETag: p.etag}, nil
}

// CompleteMultipart assembles the listed parts (ascending, every one but the
// last at least the minimum part size) into the object.
func (s *Store) CompleteMultipart(ctx context.Context, key, uploadID string, parts []cos.CompletedPart) (cos.ObjectInfo, error) {
	if err := s.begin(ctx, OpCompleteMultipart, key); err != nil {
		return cos.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[uploadID]
	if !ok || u.key != key {
		return cos.ObjectInfo{}, opErr(OpCompleteMultipart, key, cos.ErrNotFound, "NoSuchUpload")
	}
	if len(parts) == 0 {
		return cos.ObjectInfo{}, opErr(OpCompleteMultipart, key, cos.ErrInvalidArgument, "MalformedXML")
	}
	o := &object{lastModified: s.now().UTC().Truncate(time.Second), contentType: u.contentType, metadata: u.metadata}
	var sums []byte
	for i, cp := range parts {
		if i > 0 && cp.PartNumber <= parts[i-1].PartNumber {
			return cos.ObjectInfo{}, opErr(OpCompleteMultipart, key, cos.ErrInvalidArgument, "InvalidPartOrder")
		}
		p, ok := u.parts[cp.PartNumber]
		if !ok || p.etag != strings.Trim(cp.ETag, `"`) {
			return cos.ObjectInfo{}, opErr(OpCompleteMultipart, key, cos.ErrInvalidArgument, "InvalidPart")
		}
		if i < len(parts)-1 && p.size < s.minPartSize {
			return cos.ObjectInfo{}, opErr(OpCompleteMultipart, key, cos.ErrEntityTooSmall, "EntityTooSmall")
		}
		o.segments = append(o.segments, p.segments...)
		o.size += p.size
		raw, _ := hex.DecodeString(p.etag)
		sums = append(sums, raw...)
	}
	o.etag = fmt.Sprintf("%s-%d", md5hex(sums), len(parts))
	s.objects[key] = o
	delete(s.uploads, uploadID)
	return o.info(key, true), nil
}

// AbortMultipart discards an upload and its parts.
func (s *Store) AbortMultipart(ctx context.Context, key, uploadID string) error {
	if err := s.begin(ctx, OpAbortMultipart, key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[uploadID]
	if !ok || u.key != key {
		return opErr(OpAbortMultipart, key, cos.ErrNotFound, "NoSuchUpload")
	}
	delete(s.uploads, uploadID)
	return nil
}

// List returns one ListObjectsV2 page. Objects and common prefixes both count
// against MaxKeys; a continuation never repeats an entry.
func (s *Store) List(ctx context.Context, l cos.ListOptions) (cos.ListPage, error) {
	if err := s.begin(ctx, OpList, l.Prefix); err != nil {
		return cos.ListPage{}, err
	}
	maxKeys := int(l.MaxKeys)
	if maxKeys <= 0 || maxKeys > defaultMaxKeys {
		maxKeys = defaultMaxKeys
	}
	after := l.StartAfter
	if l.ContinuationToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(l.ContinuationToken)
		if err != nil {
			return cos.ListPage{}, opErr(OpList, "", cos.ErrInvalidArgument, "InvalidArgument")
		}
		after = string(raw)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.sortedKeys()
	start := sort.SearchStrings(keys, l.Prefix)
	var page cos.ListPage
	var last string
	n := 0
	for i := start; i < len(keys); i++ {
		k := keys[i]
		if !strings.HasPrefix(k, l.Prefix) {
			break
		}
		if after != "" && k <= after {
			continue
		}
		item, isPrefix := k, false
		if l.Delimiter != "" {
			if j := strings.Index(k[len(l.Prefix):], l.Delimiter); j >= 0 {
				item, isPrefix = k[:len(l.Prefix)+j+len(l.Delimiter)], true
			}
		}
		// A common prefix already returned (on this page or, via the token,
		// on an earlier one) swallows every key beneath it.
		if isPrefix && (item == last || item == after) {
			continue
		}
		if n == maxKeys {
			page.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		if isPrefix {
			page.CommonPrefixes = append(page.CommonPrefixes, item)
		} else {
			page.Objects = append(page.Objects, s.objects[k].info(k, false))
		}
		last = item
		n++
	}
	return page, nil
}

// Copy copies srcKey to dstKey on the server, keeping or replacing metadata.
func (s *Store) Copy(ctx context.Context, srcKey, dstKey string, c cos.CopyOptions) (cos.ObjectInfo, error) {
	if err := s.begin(ctx, OpCopy, dstKey); err != nil {
		return cos.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	src, ok := s.objects[srcKey]
	if !ok {
		return cos.ObjectInfo{}, opErr(OpCopy, srcKey, cos.ErrNotFound, "NoSuchKey")
	}
	if c.IfMatch != "" && c.IfMatch != src.etag {
		return cos.ObjectInfo{}, opErr(OpCopy, srcKey, cos.ErrPreconditionFailed, "PreconditionFailed")
	}
	if srcKey == dstKey && !c.ReplaceMetadata {
		// S3 refuses a copy onto itself that changes nothing.
		return cos.ObjectInfo{}, opErr(OpCopy, srcKey, cos.ErrInvalidArgument, "InvalidRequest")
	}
	o := &object{
		segments: src.segments, size: src.size, etag: src.etag,
		lastModified: s.now().UTC().Truncate(time.Second),
		contentType:  src.contentType, metadata: copyMeta(src.metadata),
	}
	if c.ReplaceMetadata {
		o.contentType = c.ContentType
		o.metadata = copyMeta(c.Metadata)
	}
	s.objects[dstKey] = o
	return o.info(dstKey, true), nil
}

// Delete removes an object; deleting a missing key succeeds, as in S3.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.begin(ctx, OpDelete, key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
	return nil
}

// DeleteMany removes up to 1000 objects in one call.
func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	first := ""
	if len(keys) > 0 {
		first = keys[0]
	}
	if err := s.begin(ctx, OpDeleteMany, first); err != nil {
		return err
	}
	if len(keys) > 1000 {
		return opErr(OpDeleteMany, first, cos.ErrInvalidArgument, "MalformedXML")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.objects, k)
	}
	return nil
}

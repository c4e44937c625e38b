package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

const (
	chunkSize = 1 << 20 // application I/O size, as dd bs=1M
	poolSize  = 32 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// payload is deterministic pseudo-random content: chunk i of a large file is
// a window of a random pool at an offset that differs from chunk to chunk,
// so a misplaced chunk changes the checksum.
type payload struct{ pool []byte }

func newPayload() *payload {
	r := rand.New(rand.NewChaCha8([32]byte{'c', 'o', 's', 'm', 'o', 'u', 'n', 't'}))
	p := make([]byte, poolSize)
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return &payload{pool: p}
}

func (p *payload) window(i int64, n int) []byte {
	off := (i * 1_000_003) % int64(len(p.pool)-n)
	return p.pool[off : off+int64(n)]
}

// chunk returns the bytes of chunk i of a file of size bytes.
func (p *payload) chunk(i, size int64) []byte {
	n := min(int64(chunkSize), size-i*chunkSize)
	return p.window(i, int(n))
}

// crc is the CRC-32C of a whole file of size bytes.
func (p *payload) crc(size int64) uint32 {
	var c uint32
	for i := int64(0); i*chunkSize < size; i++ {
		c = crc32.Update(c, castagnoli, p.chunk(i, size))
	}
	return c
}

// reader streams a file of size bytes, for the SDK upload.
func (p *payload) reader(size int64) io.Reader {
	return &payloadReader{p: p, size: size}
}

type payloadReader struct {
	p         *payload
	size, off int64
}

func (r *payloadReader) Read(b []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	i := r.off / chunkSize
	c := r.p.chunk(i, r.size)[r.off-i*chunkSize:]
	n := copy(b, c)
	r.off += int64(n)
	return n, nil
}

// smallFile is the content of small file i.
func (p *payload) smallFile(i, size int) []byte { return p.window(int64(i)+7, size) }

// lsObjectSize is the size of listed object i: varied, so that ls -l output
// can be checked against the bucket.
func lsObjectSize(i int) int { return (i % 97) * 11 }

func smallName(i int) string { return fmt.Sprintf("f%05d", i) }

// --- sequential ---

func seqWrite(ctx context.Context, s *session, p *payload, key string, size int64, cfg *config) error {
	if !s.tool.fuse() {
		_, err := s.bucket.UploadStream(ctx, key, p.reader(size), cos.PutOptions{}, cfg.partSize, cfg.concurrency)
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.mnt, key), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for i := int64(0); i*chunkSize < size; i++ {
		if err := ctx.Err(); err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(p.chunk(i, size)); err != nil {
			f.Close()
			return err
		}
	}
	// close() is where a FUSE filesystem reports a failed upload.
	return f.Close()
}

// seqRead reads the whole object sequentially and returns its CRC-32C.
func seqRead(ctx context.Context, s *session, key string, cfg *config) (uint32, int64, error) {
	if !s.tool.fuse() {
		return parallelGet(ctx, s.bucket, key, cfg.partSize, cfg.concurrency)
	}
	f, err := os.Open(filepath.Join(s.mnt, key))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, chunkSize)
	var c uint32
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, total, err
		}
		n, err := f.Read(buf)
		c = crc32.Update(c, castagnoli, buf[:n])
		total += int64(n)
		if err == io.EOF {
			return c, total, nil
		}
		if err != nil {
			return 0, total, err
		}
	}
}

// parallelGet is the SDK read ceiling: one HEAD, then ranged GETs of
// partSize with concurrency in flight, consumed in order.
func parallelGet(ctx context.Context, b *cos.Bucket, key string, partSize int64, concurrency int) (uint32, int64, error) {
	info, err := b.Head(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nparts := int((info.Size + partSize - 1) / partSize)
	type result struct {
		data []byte
		err  error
	}
	results := make([]chan result, nparts)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	// slots bounds the parts fetched but not yet consumed, so memory stays
	// at concurrency parts like a FUSE readahead window.
	slots := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		for i := 0; i < nparts; i++ {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				off := int64(i) * partSize
				n := min(partSize, info.Size-off)
				body, _, err := b.Get(ctx, key, cos.GetOptions{Offset: off, Length: n, IfMatch: info.ETag})
				if err != nil {
					results[i] <- result{err: err}
					return
				}
				defer body.Close()
				buf := make([]byte, n)
				_, err = io.ReadFull(body, buf)
				results[i] <- result{data: buf, err: err}
			}(i)
		}
	}()
	var c uint32
	var total int64
	for i := 0; i < nparts; i++ {
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return 0, total, ctx.Err()
		}
		if r.err != nil {
			return 0, total, r.err
		}
		c = crc32.Update(c, castagnoli, r.data)
		total += int64(len(r.data))
		<-slots
	}
	return c, total, nil
}

// --- small files ---

func smallWrite(ctx context.Context, s *session, p *payload, dir string, n, size int) error {
	if s.tool.fuse() {
		if err := os.Mkdir(filepath.Join(s.mnt, dir), 0o755); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		data := p.smallFile(i, size)
		if !s.tool.fuse() {
			if _, err := s.bucket.Put(ctx, dir+"/"+smallName(i), bytes.NewReader(data), int64(size), cos.PutOptions{}); err != nil {
				return err
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(s.mnt, dir, smallName(i)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func smallRead(ctx context.Context, s *session, p *payload, dir string, n, size int) error {
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var got []byte
		var err error
		if s.tool.fuse() {
			got, err = os.ReadFile(filepath.Join(s.mnt, dir, smallName(i)))
		} else {
			var body io.ReadCloser
			body, _, err = s.bucket.Get(ctx, dir+"/"+smallName(i), cos.GetOptions{})
			if err == nil {
				got, err = io.ReadAll(body)
				body.Close()
			}
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(got, p.smallFile(i, size)) {
			return fmt.Errorf("%s/%s: content differs (%d bytes read, %d written)", dir, smallName(i), len(got), size)
		}
	}
	return nil
}

// --- ls -l ---

// populate creates n objects under dir/ through the SDK, in parallel.
func populate(ctx context.Context, b *cos.Bucket, p *payload, dir string, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				size := lsObjectSize(i)
				if _, err := b.Put(ctx, dir+"/"+smallName(i), bytes.NewReader(p.smallFile(i, size)), int64(size), cos.PutOptions{}); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// list runs `ls -l` on the directory (or lists it through the SDK) and
// checks that every object is shown with its size.
func list(ctx context.Context, s *session, dir string, n int) error {
	if !s.tool.fuse() {
		seen, token := 0, ""
		for {
			page, err := s.bucket.List(ctx, cos.ListOptions{Prefix: dir + "/", Delimiter: "/", ContinuationToken: token})
			if err != nil {
				return err
			}
			for _, o := range page.Objects {
				i, err := strconv.Atoi(strings.TrimPrefix(o.Key, dir+"/f"))
				if err != nil || o.Size != int64(lsObjectSize(i)) {
					return fmt.Errorf("listing: unexpected object %s size %d", o.Key, o.Size)
				}
				seen++
			}
			if token = page.NextContinuationToken; token == "" {
				break
			}
		}
		if seen != n {
			return fmt.Errorf("listing shows %d objects, want %d", seen, n)
		}
		return nil
	}
	cmd := exec.CommandContext(ctx, "ls", "-l", filepath.Join(s.mnt, dir))
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	seen, bad := 0, ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || f[0] == "total" {
			continue
		}
		i, err1 := strconv.Atoi(strings.TrimPrefix(f[8], "f"))
		size, err2 := strconv.Atoi(f[4])
		if err1 != nil || err2 != nil || size != lsObjectSize(i) {
			if bad == "" {
				bad = sc.Text()
			}
			continue
		}
		seen++
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("ls -l: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if bad != "" {
		return fmt.Errorf("ls -l: unexpected line %q", bad)
	}
	if seen != n {
		return fmt.Errorf("ls -l shows %d entries, want %d", seen, n)
	}
	return nil
}

// --- until the data is in the bucket ---

// probe checks the bucket through the SDK and counts its own requests, so
// that they can be subtracted from the server's request counts.
type probe struct {
	c        *cos.Client
	mu       sync.Mutex
	requests map[string]int
}

func (pr *probe) count(op string) {
	pr.mu.Lock()
	pr.requests[op]++
	pr.mu.Unlock()
}

// take returns and resets the request counts.
func (pr *probe) take() map[string]int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	r := pr.requests
	pr.requests = map[string]int{}
	return r
}

// waitObject polls HEAD until the object exists with the full size: a tool
// that uploads after close (rclone) is measured until the data is stored.
func (pr *probe) waitObject(ctx context.Context, bucket, key string, size int64, timeout time.Duration) error {
	return pr.poll(ctx, timeout, func() (bool, error) {
		pr.count("HeadObject")
		info, err := pr.c.HeadObject(ctx, bucket, key)
		if errors.Is(err, cos.ErrNotFound) {
			return false, nil
		}
		return err == nil && info.Size == size, err
	})
}

// waitObjects polls the listing of dir/ until n objects of size are there.
func (pr *probe) waitObjects(ctx context.Context, bucket, dir string, n int, size int64, timeout time.Duration) error {
	return pr.poll(ctx, timeout, func() (bool, error) {
		count, token := 0, ""
		for {
			pr.count("ListObjectsV2")
			page, err := pr.c.ListObjects(ctx, bucket, cos.ListOptions{Prefix: dir + "/", ContinuationToken: token})
			if err != nil {
				return false, err
			}
			for _, o := range page.Objects {
				if o.Size == size {
					count++
				}
			}
			if token = page.NextContinuationToken; token == "" {
				return count == n, nil
			}
		}
	})
}

func (pr *probe) poll(ctx context.Context, timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("data not in the bucket %s after close", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// --- several readers at once ---

// multiRead reads files multiKey(0..n-1) of size bytes at once, one reader
// each, and checks their CRC-32C. Through a FUSE mount each reader reads
// its file sequentially in 1 MiB reads; through the SDK each reads it with
// ranged GETs of partSize, one in flight (n in flight in all).
func multiRead(ctx context.Context, s *session, n int, size int64, want uint32, cfg *config) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got uint32
			var total int64
			var err error
			if s.tool.fuse() {
				got, total, err = seqRead(ctx, s, multiKey(i), cfg)
			} else {
				got, total, err = parallelGet(ctx, s.bucket, multiKey(i), cfg.partSize, 1)
			}
			if err == nil && (total != size || got != want) {
				err = fmt.Errorf("%s: read %d bytes with CRC-32C %08x, want %d bytes with %08x", multiKey(i), total, got, size, want)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

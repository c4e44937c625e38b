// Package store is the emulator's embedded object store: it owns the on-disk
// state of every COS bucket, object and multipart upload the emulator serves.
//
// Metadata lives in one bbolt database (ordered keys make listings a cursor
// walk); object bodies are immutable files under dir/blobs, written to a temp
// file, synced and renamed before the metadata that points at them commits, so
// a half-written PUT is never visible and a restart sees exactly what was
// acknowledged. Multipart parts are files under dir/uploads/<id>/. The store
// speaks no HTTP; the COS server maps its errors to S3 error codes.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"
)

// Errors returned by the store; callers compare with errors.Is.
var (
	ErrNoSuchBucket       = errors.New("store: no such bucket")
	ErrNoSuchKey          = errors.New("store: no such key")
	ErrBucketExists       = errors.New("store: bucket already exists")
	ErrBucketNotEmpty     = errors.New("store: bucket not empty")
	ErrNoSuchUpload       = errors.New("store: no such upload")
	ErrInvalidPart        = errors.New("store: invalid part")
	ErrInvalidPartOrder   = errors.New("store: parts not in ascending order")
	ErrEntityTooSmall     = errors.New("store: part smaller than the minimum part size")
	ErrPreconditionFailed = errors.New("store: precondition failed")
	ErrInvalidBucketName  = errors.New("store: invalid bucket name")
	ErrKeyTooLong         = errors.New("store: key longer than 1024 bytes")
	// ErrInvalidArgument reports a malformed request value: an empty or
	// non-UTF-8 key, a part number outside 1..10000, a copy range outside the
	// source object.
	ErrInvalidArgument = errors.New("store: invalid argument")
)

// MinPartSize is the default minimum size of every part but the last of a
// multipart upload. Stores read it when opened; Options.MinPartSize overrides it.
var MinPartSize int64 = 5 << 20

// MaxKeyLength is the longest object key accepted, in bytes.
const MaxKeyLength = 1024

// MaxPartNumber is the highest part number of a multipart upload.
const MaxPartNumber = 10000

// Bucket describes a COS bucket.
type Bucket struct {
	Name               string
	LocationConstraint string
	ServiceInstance    string
	Created            time.Time
}

// ObjectMeta is the user-settable metadata of an object.
type ObjectMeta struct {
	ContentType string
	// Metadata has lower-case keys without the x-amz-meta- prefix.
	Metadata map[string]string
}

// Object describes one stored object version.
type Object struct {
	Key  string
	Size int64
	// ETag has no quotes: the md5 hex of the body, or for a completed multipart
	// upload the md5 of the concatenated part md5s followed by "-N".
	ETag         string
	LastModified time.Time
	ObjectMeta
}

// Precondition decides whether a write may proceed given the object it would
// replace (nil when the key is absent). It runs inside the write transaction,
// so its verdict and the write are atomic; return ErrPreconditionFailed (or any
// error, which is passed through) to refuse.
type Precondition func(existing *Object) error

// Options tune a Store.
type Options struct {
	// MinPartSize overrides the package MinPartSize when > 0.
	MinPartSize int64
	// NoSync skips fsync of bodies and metadata. Data still survives a crash of
	// the process (it is in the page cache) but not of the machine; for tests.
	NoSync bool
}

// Store is an object store rooted at one directory. It is safe for concurrent
// use; open a directory with only one Store at a time.
type Store struct {
	dir         string
	db          *bolt.DB
	minPartSize int64
	noSync      bool

	// fileMu orders unlinking of blob and part files after the metadata that
	// referenced them is gone against readers that looked the metadata up and
	// are about to open the file: readers hold it shared from lookup to open,
	// removers hold it exclusively while unlinking. An open file survives unlink.
	fileMu sync.RWMutex
}

// bbolt layout: top-level bucket "buckets" holds one nested bucket per COS
// bucket, which holds the "info" key and the nested buckets below.
var (
	bktBuckets = []byte("buckets")
	keyInfo    = []byte("info")
	bktObjects = []byte("objects")
	bktUploads = []byte("uploads")
	bktParts   = []byte("parts")
)

const (
	dbFile     = "meta.db"
	blobsDir   = "blobs"
	uploadsDir = "uploads"
	tmpDir     = "tmp"
)

// Open opens (creating if needed) the store in dir with default options.
func Open(dir string) (*Store, error) {
	return OpenWithOptions(dir, Options{})
}

// OpenWithOptions opens (creating if needed) the store in dir.
func OpenWithOptions(dir string, opts Options) (*Store, error) {
	s := &Store{dir: dir, minPartSize: MinPartSize, noSync: opts.NoSync}
	if opts.MinPartSize > 0 {
		s.minPartSize = opts.MinPartSize
	}
	for _, d := range []string{dir, s.path(blobsDir), s.path(uploadsDir), s.path(tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
	}
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(s.path(blobsDir, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return nil, fmt.Errorf("store: create blob shard: %w", err)
		}
	}
	db, err := bolt.Open(s.path(dbFile), 0o600, &bolt.Options{Timeout: 10 * time.Second, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("store: open metadata %s: %w", s.path(dbFile), err)
	}
	s.db = db
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bktBuckets)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init metadata: %w", err)
	}
	if err := s.collectGarbage(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the metadata database. Readers already returned by
// OpenObject stay readable until closed.
func (s *Store) Close() error {
	return s.db.Close()
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// collectGarbage removes files no metadata references: temp files of writes
// interrupted by a crash, blobs whose replacement committed but whose unlink
// did not happen, and part files or upload directories of finished uploads.
func (s *Store) collectGarbage() error {
	blobs := map[string]bool{}
	parts := map[string]bool{}   // "<uploadID>/<file>"
	uploads := map[string]bool{} // upload IDs
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktBuckets).ForEachBucket(func(name []byte) error {
			b := tx.Bucket(bktBuckets).Bucket(name)
			if err := b.Bucket(bktObjects).ForEach(func(_, v []byte) error {
				var rec objectRecord
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
				if rec.Blob != "" {
					blobs[rec.Blob] = true
				}
				return nil
			}); err != nil {
				return err
			}
			if err := b.Bucket(bktUploads).ForEach(func(k, _ []byte) error {
				uploads[string(k)] = true
				return nil
			}); err != nil {
				return err
			}
			return b.Bucket(bktParts).ForEach(func(k, v []byte) error {
				var rec partRecord
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
				id, _, _ := strings.Cut(string(k), "/")
				parts[id+"/"+rec.File] = true
				return nil
			})
		})
	})
	if err != nil {
		return fmt.Errorf("store: scan metadata: %w", err)
	}
	if err := removeChildren(s.path(tmpDir), func(string) bool { return false }); err != nil {
		return err
	}
	shards, err := os.ReadDir(s.path(blobsDir))
	if err != nil {
		return fmt.Errorf("store: scan blobs: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		if err := removeChildren(s.path(blobsDir, sh.Name()), func(n string) bool { return blobs[n] }); err != nil {
			return err
		}
	}
	ups, err := os.ReadDir(s.path(uploadsDir))
	if err != nil {
		return fmt.Errorf("store: scan uploads: %w", err)
	}
	for id := range uploads {
		// A crash can lose the directory of an upload whose record survived;
		// recreate it so the upload still accepts parts.
		if err := os.MkdirAll(s.path(uploadsDir, id), 0o700); err != nil {
			return fmt.Errorf("store: restore upload dir: %w", err)
		}
	}
	for _, u := range ups {
		id := u.Name()
		if !uploads[id] || !u.IsDir() {
			if err := os.RemoveAll(s.path(uploadsDir, id)); err != nil {
				return fmt.Errorf("store: remove stale upload: %w", err)
			}
			klog.V(2).InfoS("Removed files of an ended upload", "uploadID", id)
			continue
		}
		if err := removeChildren(s.path(uploadsDir, id), func(n string) bool { return parts[id+"/"+n] }); err != nil {
			return err
		}
	}
	return nil
}

// removeChildren removes every entry of dir for which keep returns false.
func removeChildren(dir string, keep func(name string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: scan %s: %w", dir, err)
	}
	for _, e := range entries {
		if keep(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("store: remove unreferenced file: %w", err)
		}
		klog.V(2).InfoS("Removed unreferenced store file", "path", p)
	}
	return nil
}

// objectRecord is the persisted form of an object.
type objectRecord struct {
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"`
	LastModified time.Time         `json:"mtime"`
	ContentType  string            `json:"ct,omitempty"`
	Metadata     map[string]string `json:"meta,omitempty"`
	// Blob names the body file; empty for a zero-length body.
	Blob string `json:"blob,omitempty"`
}

func (r *objectRecord) object(key string) Object {
	return Object{
		Key:          key,
		Size:         r.Size,
		ETag:         r.ETag,
		LastModified: r.LastModified,
		ObjectMeta:   ObjectMeta{ContentType: r.ContentType, Metadata: maps.Clone(r.Metadata)},
	}
}

// normalizeMeta copies meta with lower-cased metadata keys so callers' maps
// are never aliased by stored records.
func normalizeMeta(meta ObjectMeta) ObjectMeta {
	out := ObjectMeta{ContentType: meta.ContentType}
	if len(meta.Metadata) > 0 {
		out.Metadata = make(map[string]string, len(meta.Metadata))
		for k, v := range meta.Metadata {
			out.Metadata[strings.ToLower(k)] = v
		}
	}
	return out
}

// bucketTx returns the nested bbolt bucket of a COS bucket.
func bucketTx(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	b := tx.Bucket(bktBuckets).Bucket([]byte(name))
	if b == nil {
		return nil, ErrNoSuchBucket
	}
	return b, nil
}

func getObjectRecord(objects *bolt.Bucket, key string) (*objectRecord, error) {
	v := objects.Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var rec objectRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("store: decode object record: %w", err)
	}
	return &rec, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode record: %w", err)
	}
	return b.Put(key, data)
}

// checkPrecondition runs pre against the record about to be replaced.
func checkPrecondition(pre Precondition, key string, existing *objectRecord) error {
	if pre == nil {
		return nil
	}
	if existing == nil {
		return pre(nil)
	}
	obj := existing.object(key)
	return pre(&obj)
}

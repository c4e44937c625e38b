package store

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"
)

// Upload describes an in-progress multipart upload.
type Upload struct {
	ID        string
	Bucket    string
	Key       string
	Initiated time.Time
	ObjectMeta
}

// Part describes one uploaded part. CompleteMultipartUpload reads only Number
// and ETag.
type Part struct {
	Number       int
	ETag         string
	Size         int64
	LastModified time.Time
}

type uploadRecord struct {
	Key         string            `json:"key"`
	Initiated   time.Time         `json:"initiated"`
	ContentType string            `json:"ct,omitempty"`
	Metadata    map[string]string `json:"meta,omitempty"`
}

type partRecord struct {
	Size         int64     `json:"size"`
	ETag         string    `json:"etag"`
	LastModified time.Time `json:"mtime"`
	// File is the part's file name inside the upload's directory; every
	// upload of a part gets a new name, so a replaced part never changes
	// under a reader.
	File string `json:"file"`
}

// partKey orders parts by number under their upload ID.
func partKey(uploadID string, number int) []byte {
	return []byte(fmt.Sprintf("%s/%05d", uploadID, number))
}

func partPrefix(uploadID string) []byte {
	return []byte(uploadID + "/")
}

// CreateMultipartUpload starts an upload of key with the given metadata.
func (s *Store) CreateMultipartUpload(bucket, key string, meta ObjectMeta) (Upload, error) {
	if err := validateKey(key); err != nil {
		return Upload{}, err
	}
	if err := s.bucketExists(bucket); err != nil {
		return Upload{}, err
	}
	meta = normalizeMeta(meta)
	id := newID()
	rec := uploadRecord{Key: key, Initiated: time.Now().UTC(), ContentType: meta.ContentType, Metadata: meta.Metadata}
	// The directory exists before the record so a part upload that finds the
	// record can always create its file.
	if err := os.Mkdir(s.uploadDir(id), 0o700); err != nil {
		return Upload{}, fmt.Errorf("store: create upload dir: %w", err)
	}
	if err := s.syncDir(s.path(uploadsDir)); err != nil {
		_ = os.RemoveAll(s.uploadDir(id))
		return Upload{}, fmt.Errorf("store: sync uploads dir: %w", err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		return putJSON(b.Bucket(bktUploads), []byte(id), rec)
	})
	if err != nil {
		_ = os.RemoveAll(s.uploadDir(id))
		return Upload{}, err
	}
	return Upload{ID: id, Bucket: bucket, Key: key, Initiated: rec.Initiated, ObjectMeta: meta}, nil
}

// getUpload returns the bbolt bucket of a COS bucket and the record of one of
// its uploads, which must be for key.
func getUpload(tx *bolt.Tx, bucket, key, uploadID string) (*bolt.Bucket, *uploadRecord, error) {
	b, err := bucketTx(tx, bucket)
	if err != nil {
		return nil, nil, err
	}
	v := b.Bucket(bktUploads).Get([]byte(uploadID))
	if v == nil {
		return nil, nil, ErrNoSuchUpload
	}
	var rec uploadRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, nil, fmt.Errorf("store: decode upload record: %w", err)
	}
	if rec.Key != key {
		return nil, nil, ErrNoSuchUpload
	}
	return b, &rec, nil
}

func (s *Store) uploadExists(bucket, key, uploadID string) error {
	return s.db.View(func(tx *bolt.Tx) error {
		_, _, err := getUpload(tx, bucket, key, uploadID)
		return err
	})
}

// UploadPart stores part number (1..10000) of an upload, replacing an earlier
// part with the same number.
func (s *Store) UploadPart(bucket, key, uploadID string, number int, r io.Reader) (Part, error) {
	if number < 1 || number > MaxPartNumber {
		return Part{}, ErrInvalidArgument
	}
	if err := s.uploadExists(bucket, key, uploadID); err != nil {
		return Part{}, err
	}
	return s.putPart(bucket, key, uploadID, number, r)
}

// UploadPartCopy stores as part number the byte range [offset, offset+length)
// of an existing object; length -1 means up to the end of the object.
func (s *Store) UploadPartCopy(bucket, key, uploadID string, number int, srcBucket, srcKey string, offset, length int64) (Part, error) {
	if number < 1 || number > MaxPartNumber {
		return Part{}, ErrInvalidArgument
	}
	if err := s.uploadExists(bucket, key, uploadID); err != nil {
		return Part{}, err
	}
	src, body, err := s.OpenObject(srcBucket, srcKey)
	if err != nil {
		return Part{}, err
	}
	defer body.Close()
	if length == -1 {
		length = src.Size - offset
	}
	if offset < 0 || offset > src.Size || length < 0 || length > src.Size-offset {
		return Part{}, ErrInvalidArgument
	}
	if _, err := body.Seek(offset, io.SeekStart); err != nil {
		return Part{}, fmt.Errorf("store: seek copy source: %w", err)
	}
	return s.putPart(bucket, key, uploadID, number, io.LimitReader(body, length))
}

func (s *Store) putPart(bucket, key, uploadID string, number int, r io.Reader) (Part, error) {
	w, err := s.writeFile(s.uploadDir(uploadID), fmt.Sprintf("%05d-*", number), r)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// The upload was completed or aborted while we started.
			return Part{}, ErrNoSuchUpload
		}
		return Part{}, err
	}
	if err := s.syncDir(s.uploadDir(uploadID)); err != nil {
		w.discard()
		return Part{}, fmt.Errorf("store: sync upload dir: %w", err)
	}
	rec := partRecord{Size: w.size, ETag: hex.EncodeToString(w.md5), LastModified: time.Now().UTC(), File: filepath.Base(w.path)}
	var old string
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, _, err := getUpload(tx, bucket, key, uploadID)
		if err != nil {
			return err
		}
		parts := b.Bucket(bktParts)
		pk := partKey(uploadID, number)
		if v := parts.Get(pk); v != nil {
			var prev partRecord
			if err := json.Unmarshal(v, &prev); err != nil {
				return fmt.Errorf("store: decode part record: %w", err)
			}
			old = prev.File
		}
		return putJSON(parts, pk, rec)
	})
	if err != nil {
		w.discard()
		return Part{}, err
	}
	if old != "" {
		s.fileMu.Lock()
		removeLogged(filepath.Join(s.uploadDir(uploadID), old))
		s.fileMu.Unlock()
	}
	return Part{Number: number, ETag: rec.ETag, Size: rec.Size, LastModified: rec.LastModified}, nil
}

// CompleteMultipartUpload assembles the listed parts, in ascending number
// order, into the object and ends the upload. Every part but the last must be
// at least the minimum part size. The object's ETag is the md5 of the
// concatenated binary part md5s, followed by "-" and the part count.
func (s *Store) CompleteMultipartUpload(bucket, key, uploadID string, parts []Part, pre Precondition) (Object, error) {
	if len(parts) == 0 {
		return Object{}, ErrInvalidPart
	}
	for i := 1; i < len(parts); i++ {
		if parts[i].Number <= parts[i-1].Number {
			return Object{}, ErrInvalidPartOrder
		}
	}
	staging, up, sums, err := s.stageParts(bucket, key, uploadID, parts)
	if err != nil {
		return Object{}, err
	}
	defer os.RemoveAll(staging)
	w, err := s.concatParts(staging, len(parts))
	if err != nil {
		return Object{}, err
	}
	blob, err := s.installBlob(w)
	if err != nil {
		return Object{}, err
	}
	etag := md5.Sum(sums)
	rec := &objectRecord{
		Size:         w.size,
		ETag:         hex.EncodeToString(etag[:]) + "-" + strconv.Itoa(len(parts)),
		LastModified: time.Now().UTC(),
		ContentType:  up.ContentType,
		Metadata:     up.Metadata,
		Blob:         blob,
	}
	obj, err := s.commitObject(bucket, key, rec, pre, func(b *bolt.Bucket) error {
		if b.Bucket(bktUploads).Get([]byte(uploadID)) == nil {
			return ErrNoSuchUpload // completed or aborted concurrently
		}
		return deleteUploadRecords(b, uploadID)
	})
	if err != nil {
		return Object{}, err
	}
	s.removeUploadDirs(uploadID)
	return obj, nil
}

// stageParts validates the requested parts against the upload and hard-links
// their files, in order, into a fresh staging directory, so a concurrent part
// replacement or abort cannot pull them away while they are concatenated. It
// returns the directory, the upload and the concatenated binary part md5s.
func (s *Store) stageParts(bucket, key, uploadID string, parts []Part) (string, *uploadRecord, []byte, error) {
	s.fileMu.RLock()
	defer s.fileMu.RUnlock()
	var up *uploadRecord
	files := make([]string, 0, len(parts))
	sums := make([]byte, 0, md5.Size*len(parts))
	err := s.db.View(func(tx *bolt.Tx) error {
		b, rec, err := getUpload(tx, bucket, key, uploadID)
		if err != nil {
			return err
		}
		up = rec
		stored := b.Bucket(bktParts)
		for i, p := range parts {
			if p.Number < 1 || p.Number > MaxPartNumber {
				return ErrInvalidPart
			}
			v := stored.Get(partKey(uploadID, p.Number))
			if v == nil {
				return ErrInvalidPart
			}
			var pr partRecord
			if err := json.Unmarshal(v, &pr); err != nil {
				return fmt.Errorf("store: decode part record: %w", err)
			}
			if !strings.EqualFold(strings.Trim(p.ETag, `"`), pr.ETag) {
				return ErrInvalidPart
			}
			if i < len(parts)-1 && pr.Size < s.minPartSize {
				return ErrEntityTooSmall
			}
			sum, err := hex.DecodeString(pr.ETag)
			if err != nil {
				return fmt.Errorf("store: decode part etag: %w", err)
			}
			sums = append(sums, sum...)
			files = append(files, pr.File)
		}
		return nil
	})
	if err != nil {
		return "", nil, nil, err
	}
	staging, err := os.MkdirTemp(s.path(tmpDir), "complete-")
	if err != nil {
		return "", nil, nil, fmt.Errorf("store: create staging dir: %w", err)
	}
	for i, f := range files {
		if err := os.Link(filepath.Join(s.uploadDir(uploadID), f), filepath.Join(staging, strconv.Itoa(i))); err != nil {
			_ = os.RemoveAll(staging)
			return "", nil, nil, fmt.Errorf("store: stage part: %w", err)
		}
	}
	return staging, up, sums, nil
}

// concatParts streams the n staged part files into one new temp file; file
// to file copies let the kernel move the data without passing it through
// user memory.
func (s *Store) concatParts(staging string, n int) (written, error) {
	out, err := os.CreateTemp(s.path(tmpDir), "complete-*")
	if err != nil {
		return written{}, fmt.Errorf("store: create object file: %w", err)
	}
	var size int64
	err = func() error {
		for i := 0; i < n; i++ {
			in, err := os.Open(filepath.Join(staging, strconv.Itoa(i)))
			if err != nil {
				return err
			}
			c, err := io.Copy(out, in)
			in.Close()
			if err != nil {
				return err
			}
			size += c
		}
		return s.syncFile(out)
	}()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(out.Name())
		return written{}, fmt.Errorf("store: assemble object: %w", err)
	}
	return written{path: out.Name(), size: size}, nil
}

// deleteUploadRecords removes an upload and its part records.
func deleteUploadRecords(b *bolt.Bucket, uploadID string) error {
	if err := b.Bucket(bktUploads).Delete([]byte(uploadID)); err != nil {
		return err
	}
	prefix := partPrefix(uploadID)
	c := b.Bucket(bktParts).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// removeUploadDirs deletes the part files of ended uploads.
func (s *Store) removeUploadDirs(ids ...string) {
	if len(ids) == 0 {
		return
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	for _, id := range ids {
		if err := os.RemoveAll(s.uploadDir(id)); err != nil {
			klog.ErrorS(err, "Removing part files of an ended upload", "uploadID", id)
		}
	}
}

// AbortMultipartUpload ends an upload and discards its parts.
func (s *Store) AbortMultipartUpload(bucket, key, uploadID string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, _, err := getUpload(tx, bucket, key, uploadID)
		if err != nil {
			return err
		}
		return deleteUploadRecords(b, uploadID)
	})
	if err != nil {
		return err
	}
	s.removeUploadDirs(uploadID)
	return nil
}

// ListParts returns the parts of an upload in ascending number order.
func (s *Store) ListParts(bucket, key, uploadID string) ([]Part, error) {
	var out []Part
	err := s.db.View(func(tx *bolt.Tx) error {
		b, _, err := getUpload(tx, bucket, key, uploadID)
		if err != nil {
			return err
		}
		prefix := partPrefix(uploadID)
		c := b.Bucket(bktParts).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			n, err := strconv.Atoi(string(k[len(prefix):]))
			if err != nil {
				return fmt.Errorf("store: decode part key: %w", err)
			}
			var pr partRecord
			if err := json.Unmarshal(v, &pr); err != nil {
				return fmt.Errorf("store: decode part record: %w", err)
			}
			out = append(out, Part{Number: n, ETag: pr.ETag, Size: pr.Size, LastModified: pr.LastModified})
		}
		return nil
	})
	return out, err
}

// ListMultipartUploads returns the in-progress uploads of a bucket, sorted by
// key and then by initiation time.
func (s *Store) ListMultipartUploads(bucket string) ([]Upload, error) {
	var out []Upload
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		return b.Bucket(bktUploads).ForEach(func(k, v []byte) error {
			var rec uploadRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("store: decode upload record: %w", err)
			}
			out = append(out, Upload{
				ID: string(k), Bucket: bucket, Key: rec.Key, Initiated: rec.Initiated,
				ObjectMeta: ObjectMeta{ContentType: rec.ContentType, Metadata: rec.Metadata},
			})
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		if !out[i].Initiated.Equal(out[j].Initiated) {
			return out[i].Initiated.Before(out[j].Initiated)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

package store

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

func validateKey(key string) error {
	if len(key) > MaxKeyLength {
		return ErrKeyTooLong
	}
	if key == "" || !utf8.ValidString(key) {
		return ErrInvalidArgument
	}
	return nil
}

// bucketExists fails fast before a body is streamed to disk for nothing.
func (s *Store) bucketExists(name string) error {
	return s.db.View(func(tx *bolt.Tx) error {
		_, err := bucketTx(tx, name)
		return err
	})
}

// PutObject stores the body read from r under key, replacing any existing
// object if pre (when non-nil) allows it.
func (s *Store) PutObject(bucket, key string, r io.Reader, meta ObjectMeta, pre Precondition) (Object, error) {
	if err := validateKey(key); err != nil {
		return Object{}, err
	}
	if err := s.bucketExists(bucket); err != nil {
		return Object{}, err
	}
	w, err := s.writeFile(s.path(tmpDir), "put-*", r)
	if err != nil {
		return Object{}, err
	}
	blob, err := s.installBlob(w)
	if err != nil {
		return Object{}, err
	}
	meta = normalizeMeta(meta)
	rec := &objectRecord{
		Size:         w.size,
		ETag:         hex.EncodeToString(w.md5),
		LastModified: time.Now().UTC(),
		ContentType:  meta.ContentType,
		Metadata:     meta.Metadata,
		Blob:         blob,
	}
	return s.commitObject(bucket, key, rec, pre, nil)
}

// commitObject makes rec the current version of key if pre allows it, and
// unlinks the blob it replaces. On failure the new blob is removed. extra, if
// set, runs in the same transaction (completing an upload uses it).
func (s *Store) commitObject(bucket, key string, rec *objectRecord, pre Precondition, extra func(b *bolt.Bucket) error) (Object, error) {
	var old string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		if extra != nil {
			if err := extra(b); err != nil {
				return err
			}
		}
		objects := b.Bucket(bktObjects)
		existing, err := getObjectRecord(objects, key)
		if err != nil {
			return err
		}
		if err := checkPrecondition(pre, key, existing); err != nil {
			return err
		}
		if existing != nil {
			old = existing.Blob
		}
		return putJSON(objects, []byte(key), rec)
	})
	if err != nil {
		s.removeBlob(rec.Blob)
		return Object{}, err
	}
	s.removeBlob(old)
	return rec.object(key), nil
}

// lookupObject reads the current record of key.
func (s *Store) lookupObject(bucket, key string) (*objectRecord, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	var rec *objectRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		rec, err = getObjectRecord(b.Bucket(bktObjects), key)
		if err != nil {
			return err
		}
		if rec == nil {
			return ErrNoSuchKey
		}
		return nil
	})
	return rec, err
}

// HeadObject describes the current version of key.
func (s *Store) HeadObject(bucket, key string) (Object, error) {
	rec, err := s.lookupObject(bucket, key)
	if err != nil {
		return Object{}, err
	}
	return rec.object(key), nil
}

// OpenObject returns the current version of key and a reader of exactly that
// version's body, which stays valid even if the object is replaced or deleted
// meanwhile. The caller closes the reader.
func (s *Store) OpenObject(bucket, key string) (Object, io.ReadSeekCloser, error) {
	s.fileMu.RLock()
	defer s.fileMu.RUnlock()
	rec, err := s.lookupObject(bucket, key)
	if err != nil {
		return Object{}, nil, err
	}
	body, err := s.openBlob(rec.Blob)
	if err != nil {
		return Object{}, nil, err
	}
	return rec.object(key), body, nil
}

// DeleteObject removes key if pre (when non-nil) allows it. Deleting a
// missing key succeeds, as in S3, unless pre refuses an absent object.
func (s *Store) DeleteObject(bucket, key string, pre Precondition) error {
	if err := validateKey(key); err != nil {
		return err
	}
	var old string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		objects := b.Bucket(bktObjects)
		existing, err := getObjectRecord(objects, key)
		if err != nil {
			return err
		}
		if err := checkPrecondition(pre, key, existing); err != nil {
			return err
		}
		if existing == nil {
			return nil
		}
		old = existing.Blob
		return objects.Delete([]byte(key))
	})
	if err != nil {
		return err
	}
	s.removeBlob(old)
	return nil
}

// CopyObject copies srcKey to dstKey (which may be the same key, to replace
// metadata). newMeta nil keeps the source's metadata. The copy shares no
// state with the source: deleting either leaves the other intact.
func (s *Store) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, newMeta *ObjectMeta, pre Precondition) (Object, error) {
	if err := validateKey(dstKey); err != nil {
		return Object{}, err
	}
	if err := s.bucketExists(dstBucket); err != nil {
		return Object{}, err
	}
	src, blob, err := s.linkObject(srcBucket, srcKey)
	if err != nil {
		return Object{}, err
	}
	etag := src.ETag
	if strings.Contains(etag, "-") {
		// A copy is a single-part object, so its ETag is the body's md5,
		// not the multipart form of the source.
		if etag, err = s.blobMD5(blob); err != nil {
			s.removeBlob(blob)
			return Object{}, err
		}
	}
	meta := ObjectMeta{ContentType: src.ContentType, Metadata: src.Metadata}
	if newMeta != nil {
		meta = *newMeta
	}
	meta = normalizeMeta(meta)
	rec := &objectRecord{
		Size:         src.Size,
		ETag:         etag,
		LastModified: time.Now().UTC(),
		ContentType:  meta.ContentType,
		Metadata:     meta.Metadata,
		Blob:         blob,
	}
	return s.commitObject(dstBucket, dstKey, rec, pre, nil)
}

// linkObject looks up key and gives its body a new blob name.
func (s *Store) linkObject(bucket, key string) (*objectRecord, string, error) {
	s.fileMu.RLock()
	defer s.fileMu.RUnlock()
	rec, err := s.lookupObject(bucket, key)
	if err != nil {
		return nil, "", err
	}
	blob, err := s.linkBlob(rec.Blob)
	if err != nil {
		return nil, "", err
	}
	return rec, blob, nil
}

func (s *Store) blobMD5(id string) (string, error) {
	body, err := s.openBlob(id)
	if err != nil {
		return "", err
	}
	defer body.Close()
	sum, err := md5Hex(body)
	if err != nil {
		return "", fmt.Errorf("store: hash copy: %w", err)
	}
	return sum, nil
}

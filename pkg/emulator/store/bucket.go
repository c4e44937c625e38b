package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketRecord is the persisted form of a bucket.
type bucketRecord struct {
	LocationConstraint string     `json:"location,omitempty"`
	ServiceInstance    string     `json:"instance,omitempty"`
	Created            time.Time  `json:"created"`
	Lifecycle          *Lifecycle `json:"lifecycle,omitempty"`
}

// ValidBucketName reports whether name follows the DNS-compatible naming rules
// COS and S3 share: 3-63 characters of lower-case letters, digits, dots and
// hyphens, starting and ending with a letter or digit, no empty or
// hyphen-edged labels, and not shaped like an IPv4 address.
func ValidBucketName(name string) bool {
	if len(name) < 3 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return false
	}
	if strings.Contains(name, "..") || strings.Contains(name, ".-") || strings.Contains(name, "-.") {
		return false
	}
	if addr, err := netip.ParseAddr(name); err == nil && addr.Is4() {
		return false
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// CreateBucket creates an empty bucket; ErrBucketExists if the name is taken.
func (s *Store) CreateBucket(name, locationConstraint, serviceInstance string) error {
	if !ValidBucketName(name) {
		return ErrInvalidBucketName
	}
	rec := bucketRecord{LocationConstraint: locationConstraint, ServiceInstance: serviceInstance, Created: time.Now().UTC()}
	return s.db.Update(func(tx *bolt.Tx) error {
		top := tx.Bucket(bktBuckets)
		if top.Bucket([]byte(name)) != nil {
			return ErrBucketExists
		}
		b, err := top.CreateBucket([]byte(name))
		if err != nil {
			return fmt.Errorf("store: create bucket: %w", err)
		}
		for _, sub := range [][]byte{bktObjects, bktUploads, bktParts} {
			if _, err := b.CreateBucket(sub); err != nil {
				return fmt.Errorf("store: create bucket: %w", err)
			}
		}
		return putJSON(b, keyInfo, rec)
	})
}

// DeleteBucket removes an empty bucket, aborting its in-progress uploads;
// ErrBucketNotEmpty if it holds objects.
func (s *Store) DeleteBucket(name string) error {
	var uploadIDs []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, name)
		if err != nil {
			return err
		}
		if k, _ := b.Bucket(bktObjects).Cursor().First(); k != nil {
			return ErrBucketNotEmpty
		}
		if err := b.Bucket(bktUploads).ForEach(func(k, _ []byte) error {
			uploadIDs = append(uploadIDs, string(k))
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bktBuckets).DeleteBucket([]byte(name))
	})
	if err != nil {
		return err
	}
	s.removeUploadDirs(uploadIDs...)
	return nil
}

// GetBucket describes one bucket.
func (s *Store) GetBucket(name string) (Bucket, error) {
	var out Bucket
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, name)
		if err != nil {
			return err
		}
		out, err = decodeBucket(name, b.Get(keyInfo))
		return err
	})
	return out, err
}

// ListBuckets returns every bucket, sorted by name.
func (s *Store) ListBuckets() ([]Bucket, error) {
	var out []Bucket
	err := s.db.View(func(tx *bolt.Tx) error {
		top := tx.Bucket(bktBuckets)
		// Nested buckets iterate in key order, which is the required order.
		return top.ForEachBucket(func(k []byte) error {
			bk, err := decodeBucket(string(k), top.Bucket(k).Get(keyInfo))
			if err != nil {
				return err
			}
			out = append(out, bk)
			return nil
		})
	})
	return out, err
}

func decodeBucket(name string, data []byte) (Bucket, error) {
	var rec bucketRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return Bucket{}, fmt.Errorf("store: decode bucket %s: %w", name, err)
	}
	return Bucket{Name: name, LocationConstraint: rec.LocationConstraint, ServiceInstance: rec.ServiceInstance, Created: rec.Created}, nil
}

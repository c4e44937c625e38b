package store

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrNoSuchLifecycleConfiguration: the bucket has no lifecycle configuration.
var ErrNoSuchLifecycleConfiguration = errors.New("store: no lifecycle configuration")

// LifecycleRule is one rule of a bucket's lifecycle configuration; the
// emulator keeps the parts it understands.
type LifecycleRule struct {
	ID      string `json:"id,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Enabled bool   `json:"enabled"`
	// AbortIncompleteDays > 0 aborts multipart uploads that many days
	// after they were started.
	AbortIncompleteDays int `json:"abortIncompleteDays,omitempty"`
	// ExpirationDays > 0 is stored and reported, not applied.
	ExpirationDays int `json:"expirationDays,omitempty"`
}

// Lifecycle is a bucket's lifecycle configuration.
type Lifecycle struct {
	Rules []LifecycleRule `json:"rules"`
}

// SetBucketLifecycle replaces the bucket's lifecycle configuration; nil
// removes it.
func (s *Store) SetBucketLifecycle(name string, lc *Lifecycle) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, name)
		if err != nil {
			return err
		}
		var rec bucketRecord
		if err := json.Unmarshal(b.Get(keyInfo), &rec); err != nil {
			return fmt.Errorf("store: decode bucket %s: %w", name, err)
		}
		rec.Lifecycle = lc
		return putJSON(b, keyInfo, rec)
	})
}

// GetBucketLifecycle returns the bucket's lifecycle configuration, or
// ErrNoSuchLifecycleConfiguration.
func (s *Store) GetBucketLifecycle(name string) (Lifecycle, error) {
	var rec bucketRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, name)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b.Get(keyInfo), &rec); err != nil {
			return fmt.Errorf("store: decode bucket %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return Lifecycle{}, err
	}
	if rec.Lifecycle == nil {
		return Lifecycle{}, ErrNoSuchLifecycleConfiguration
	}
	return *rec.Lifecycle, nil
}

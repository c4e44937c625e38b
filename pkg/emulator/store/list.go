package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// MaxListKeys is the most entries one ListObjects page holds.
const MaxListKeys = 1000

// ListParams selects one page of a listing.
type ListParams struct {
	Prefix     string
	Delimiter  string
	StartAfter string
	// MaxKeys bounds the page; 0 (or more than MaxListKeys) means MaxListKeys.
	MaxKeys int
}

// ListResult is one page of a listing.
type ListResult struct {
	Objects        []Object
	CommonPrefixes []string
	IsTruncated    bool
	// NextStartAfter is the last key or common prefix of this page; passing it
	// as StartAfter resumes the listing without repeating anything.
	NextStartAfter string
}

// ListObjects lists keys after p.StartAfter that start with p.Prefix, in byte
// order, following ListObjectsV2: with a delimiter, every key whose remainder
// after the prefix contains it is rolled into one common prefix, which counts
// once toward MaxKeys. When StartAfter is itself such a common prefix, the
// listing resumes after every key under it, so a common prefix never repeats
// across pages.
func (s *Store) ListObjects(bucket string, p ListParams) (ListResult, error) {
	maxKeys := p.MaxKeys
	if maxKeys <= 0 || maxKeys > MaxListKeys {
		maxKeys = MaxListKeys
	}
	var res ListResult
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucketTx(tx, bucket)
		if err != nil {
			return err
		}
		c := b.Bucket(bktObjects).Cursor()
		prefix := []byte(p.Prefix)
		delim := []byte(p.Delimiter)
		k, v := seekStart(c, p)
		count := 0
		for k != nil && bytes.HasPrefix(k, prefix) {
			if len(delim) > 0 {
				if i := bytes.Index(k[len(prefix):], delim); i >= 0 {
					if count == maxKeys {
						res.IsTruncated = true
						break
					}
					cp := string(k[:len(prefix)+i+len(delim)])
					res.CommonPrefixes = append(res.CommonPrefixes, cp)
					res.NextStartAfter = cp
					count++
					k, v = seekPast(c, cp)
					continue
				}
			}
			if count == maxKeys {
				res.IsTruncated = true
				break
			}
			var rec objectRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("store: decode object record: %w", err)
			}
			key := string(k)
			res.Objects = append(res.Objects, rec.object(key))
			res.NextStartAfter = key
			count++
			k, v = c.Next()
		}
		return nil
	})
	if err != nil {
		return ListResult{}, err
	}
	return res, nil
}

// seekStart positions c on the first key the listing may return.
func seekStart(c *bolt.Cursor, p ListParams) ([]byte, []byte) {
	if p.StartAfter == "" || p.StartAfter < p.Prefix {
		if p.Prefix == "" {
			return c.First()
		}
		return c.Seek([]byte(p.Prefix))
	}
	if p.Delimiter != "" && strings.HasPrefix(p.StartAfter, p.Prefix) {
		rest := p.StartAfter[len(p.Prefix):]
		if i := strings.Index(rest, p.Delimiter); i >= 0 && i+len(p.Delimiter) == len(rest) {
			// Resuming after a common prefix: none of its keys may come back.
			return seekPast(c, p.StartAfter)
		}
	}
	k, v := c.Seek([]byte(p.StartAfter))
	if k != nil && string(k) == p.StartAfter {
		k, v = c.Next()
	}
	return k, v
}

// seekPast positions c on the first key that does not start with prefix and
// sorts after it.
func seekPast(c *bolt.Cursor, prefix string) ([]byte, []byte) {
	succ := prefixSuccessor([]byte(prefix))
	if succ == nil {
		return nil, nil
	}
	return c.Seek(succ)
}

// prefixSuccessor returns the smallest byte string greater than every string
// that starts with prefix, or nil if there is none (prefix is all 0xff).
func prefixSuccessor(prefix []byte) []byte {
	out := bytes.Clone(prefix)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] != 0xff {
			out[i]++
			return out[:i+1]
		}
	}
	return nil
}

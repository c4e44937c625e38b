package soak

import (
	"crypto/sha256"
	"encoding"
	"fmt"
	"hash"
	"sort"
	"sync"
)

// version is one possible state of a name in the bucket: absent, or an
// object of a size and SHA-256.
type version struct {
	size int64 // -1: absent
	sum  [32]byte
}

var absent = version{size: -1}

func (v version) String() string {
	if v.size < 0 {
		return "absent"
	}
	return fmt.Sprintf("%d bytes sha256 %x", v.size, v.sum[:6])
}

// model records, per object key, the versions the bucket may hold given
// what the writers were told. A success (close, fsync, rename, unlink that
// returned no error) leaves exactly one version allowed: the one that
// call made durable. A failure adds the versions the failed call may or
// may not have made (the data may still reach the bucket when the server
// retries a dirty file), without removing any.
type model struct {
	mu      sync.Mutex
	allowed map[string]map[version]bool
	certain map[string]bool // the last call on the key succeeded
}

func newModel() *model {
	return &model{allowed: map[string]map[version]bool{}, certain: map[string]bool{}}
}

// succeeded: key now holds v.
func (m *model) succeeded(key string, v version) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allowed[key] = map[version]bool{v: true}
	m.certain[key] = true
}

// failed: key may also hold any of vs.
func (m *model) failed(key string, vs ...version) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.allowed[key]
	if set == nil {
		set = map[version]bool{absent: true}
		m.allowed[key] = set
	}
	for _, v := range vs {
		set[v] = true
	}
	m.certain[key] = false
}

// known returns the single version of a key whose last call succeeded.
func (m *model) known(key string) (version, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.certain[key] {
		return version{}, false
	}
	for v := range m.allowed[key] {
		return v, true
	}
	return version{}, false
}

// keys returns every key the model knows, sorted.
func (m *model) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.allowed))
	for k := range m.allowed {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// violation is a key whose content is none of the allowed versions.
type violation struct {
	key     string
	got     version
	allowed []version
	lost    int64 // bytes a writer was told are safe and are not there
}

// check compares actual versions with the allowed ones.
func (m *model) check(actual func(key string) version, extra []string) (violations []violation, checked int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, set := range m.allowed {
		got := actual(key)
		checked++
		if set[got] {
			continue
		}
		v := violation{key: key, got: got}
		for a := range set {
			v.allowed = append(v.allowed, a)
			if m.certain[key] && a.size > 0 {
				v.lost += a.size
			}
		}
		violations = append(violations, v)
	}
	for _, key := range extra {
		if _, ok := m.allowed[key]; !ok {
			violations = append(violations, violation{key: key, got: version{size: 0}, allowed: []version{absent}})
		}
	}
	sort.Slice(violations, func(i, j int) bool { return violations[i].key < violations[j].key })
	return violations, checked
}

// hasher is a running SHA-256 whose state can be copied, so that a prefix
// (the bytes an fsync made durable) and its continuations are summed once.
type hasher struct {
	h    hash.Hash
	size int64
}

func newHasher() *hasher { return &hasher{h: sha256.New()} }

func (h *hasher) Write(p []byte) {
	h.h.Write(p)
	h.size += int64(len(p))
}

func (h *hasher) version() version {
	var v version
	v.size = h.size
	copy(v.sum[:], h.h.Sum(nil))
	return v
}

func (h *hasher) clone() *hasher {
	state, err := h.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // sha256 always marshals
	}
	c := sha256.New()
	if err := c.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		panic(err)
	}
	return &hasher{h: c, size: h.size}
}

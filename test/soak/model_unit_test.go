package soak

import "testing"

// The model the soak judges the bucket by: a success pins one version, a
// failure widens the set, and anything outside it is a violation.
func TestModel(t *testing.T) {
	m := newModel()
	v1, v2, v3 := version{size: 1, sum: [32]byte{1}}, version{size: 2, sum: [32]byte{2}}, version{size: 3, sum: [32]byte{3}}
	m.succeeded("a", v1)
	m.failed("a", v2)        // a failed rewrite: v1 or v2
	m.failed("b", v3)        // a failed create: absent or v3
	m.succeeded("c", v1)     // ...
	m.succeeded("c", absent) // ...then unlinked
	m.succeeded("d", v1)     // a durable version...
	bucket := map[string]version{"a": v2, "b": absent, "c": absent, "d": v2, "stray": v1}
	got, checked := m.check(func(k string) version {
		if v, ok := bucket[k]; ok {
			return v
		}
		return absent
	}, []string{"a", "b", "d", "stray"})
	if checked != 4 {
		t.Errorf("checked %d keys, want 4", checked)
	}
	if len(got) != 2 || got[0].key != "d" || got[0].lost != 1 || got[1].key != "stray" {
		t.Fatalf("violations %+v, want d (1 byte lost) and the stray object", got)
	}
	if _, ok := m.known("a"); ok {
		t.Error("a key whose last call failed is known")
	}
	if v, ok := m.known("d"); !ok || v != v1 {
		t.Errorf("known(d) = %v %v", v, ok)
	}
	h := newHasher()
	h.Write([]byte("abc"))
	c := h.clone()
	c.Write([]byte("def"))
	whole := newHasher()
	whole.Write([]byte("abcdef"))
	if c.version() != whole.version() || h.version().size != 3 {
		t.Error("a cloned hasher does not continue the original's sum")
	}
}

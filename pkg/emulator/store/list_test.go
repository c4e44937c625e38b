package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// entry is one item of a listing: a key or a common prefix.
type entry struct {
	name   string
	prefix bool
}

func (e entry) String() string {
	if e.prefix {
		return "CP:" + e.name
	}
	return e.name
}

// modelList is the reference for ListObjects: the whole listing (ignoring
// MaxKeys) computed the obvious way from a sorted key slice.
func modelList(keys []string, p ListParams) []entry {
	skipUnder := ""
	if p.Delimiter != "" && strings.HasPrefix(p.StartAfter, p.Prefix) {
		rest := p.StartAfter[len(p.Prefix):]
		if i := strings.Index(rest, p.Delimiter); i >= 0 && i+len(p.Delimiter) == len(rest) {
			skipUnder = p.StartAfter
		}
	}
	var out []entry
	seen := map[string]bool{}
	for _, k := range keys {
		if k <= p.StartAfter || !strings.HasPrefix(k, p.Prefix) {
			continue
		}
		if skipUnder != "" && strings.HasPrefix(k, skipUnder) {
			continue
		}
		if p.Delimiter != "" {
			rest := k[len(p.Prefix):]
			if i := strings.Index(rest, p.Delimiter); i >= 0 {
				cp := k[:len(p.Prefix)+i+len(p.Delimiter)]
				if !seen[cp] {
					seen[cp] = true
					out = append(out, entry{cp, true})
				}
				continue
			}
		}
		out = append(out, entry{k, false})
	}
	return out
}

// pageEntries merges a page's objects and common prefixes into byte order.
func pageEntries(res ListResult) []entry {
	var out []entry
	for _, o := range res.Objects {
		out = append(out, entry{o.Key, false})
	}
	for _, cp := range res.CommonPrefixes {
		out = append(out, entry{cp, true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// randomKeys makes n distinct keys of 1-4 segments over an alphabet that
// straddles '/' in byte order ('-' and '.' sort before it, '0' and letters
// after) and includes multi-byte UTF-8; some keys are directory markers.
func randomKeys(rng *rand.Rand, n int) []string {
	alphabet := []string{"a", "b", "-", ".", "0", "~", "é"}
	set := map[string]bool{}
	for len(set) < n {
		depth := 1 + rng.IntN(4)
		segs := make([]string, depth)
		for i := range segs {
			var sb strings.Builder
			for j := 0; j < 1+rng.IntN(3); j++ {
				sb.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			segs[i] = sb.String()
		}
		k := strings.Join(segs, "/")
		if rng.IntN(10) == 0 {
			k += "/"
		}
		set[k] = true
	}
	keys := make([]string, 0, n)
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestListObjectsMatchesModel(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	rng := rand.New(rand.NewPCG(1, 2))
	keys := randomKeys(rng, 5500)
	bodies := map[string]string{}
	for i, k := range keys {
		body := ""
		if i%10 == 0 { // most are empty markers, which keeps the test fast
			body = fmt.Sprintf("body of %d", i)
		}
		bodies[k] = body
		mustPut(t, s, "bkt", k, body)
	}

	prefixes := []string{"", "a", "a/", "b/-", "é", ".", "nomatch", "a/b/"}
	for i := 0; i < 4; i++ { // prefixes cut out of real keys
		k := keys[rng.IntN(len(keys))]
		prefixes = append(prefixes, k[:1+rng.IntN(len(k))])
	}
	delimiters := []string{"", "/", "a", "/b", "é"}
	maxKeys := []int{0, 1, 3, 17, 250, 5000}
	startAfters := []string{"", "a/", "b", keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))] + "/"}

	walks := 0
	for _, prefix := range prefixes {
		for _, delim := range delimiters {
			for _, mk := range maxKeys {
				for _, sa := range startAfters {
					p := ListParams{Prefix: prefix, Delimiter: delim, StartAfter: sa, MaxKeys: mk}
					if mk == 1 && (prefix == "" || delim == "") {
						continue // thousands of one-entry pages add time, not coverage
					}
					walks++
					checkWalk(t, s, p, modelList(keys, p), bodies)
				}
			}
		}
	}
	if walks < 500 {
		t.Fatalf("only %d walks", walks)
	}
}

// checkWalk pages through a listing from p and compares it with want.
func checkWalk(t *testing.T, s *Store, p ListParams, want []entry, bodies map[string]string) {
	t.Helper()
	limit := p.MaxKeys
	if limit <= 0 || limit > MaxListKeys {
		limit = MaxListKeys
	}
	var got []entry
	seen := map[entry]bool{}
	q := p
	for pages := 0; ; pages++ {
		if pages > len(want)+1 {
			t.Fatalf("%+v: listing does not end", p)
		}
		res, err := s.ListObjects("bkt", q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		page := pageEntries(res)
		if len(page) > limit {
			t.Fatalf("%+v: page of %d entries, limit %d", q, len(page), limit)
		}
		if pages == 0 {
			first := want[:min(limit, len(want))]
			if !slices.Equal(page, first) || res.IsTruncated != (len(want) > limit) {
				t.Fatalf("%+v: first page %v truncated=%v, want %v truncated=%v", q, page, res.IsTruncated, first, len(want) > limit)
			}
		}
		for _, o := range res.Objects {
			if o.Size != int64(len(bodies[o.Key])) || o.ETag != md5hex(bodies[o.Key]) {
				t.Fatalf("%+v: object %q size %d etag %s", q, o.Key, o.Size, o.ETag)
			}
		}
		for _, e := range page {
			if seen[e] {
				t.Fatalf("%+v: %v listed twice", p, e)
			}
			seen[e] = true
		}
		got = append(got, page...)
		if len(page) > 0 && res.NextStartAfter != page[len(page)-1].name {
			t.Fatalf("%+v: NextStartAfter %q, last entry %q", q, res.NextStartAfter, page[len(page)-1].name)
		}
		if !res.IsTruncated {
			break
		}
		if len(page) != limit {
			t.Fatalf("%+v: truncated page has %d entries, want %d", q, len(page), limit)
		}
		q.StartAfter = res.NextStartAfter
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%+v: walked %d entries, model has %d\ngot  %v\nwant %v", p, len(got), len(want), head(got), head(want))
	}
}

func head(es []entry) []entry {
	return es[:min(len(es), 20)]
}

func TestListObjectsCases(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	for _, k := range []string{"a", "a-b", "a.b", "a/", "a/1", "a/2", "a/b/c", "a0", "b/x", "b/y/z", "c"} {
		mustPut(t, s, "bkt", k, "")
	}
	tests := []struct {
		name      string
		p         ListParams
		want      string
		truncated bool
		next      string
	}{
		{"all", ListParams{}, "a a-b a.b a/ a/1 a/2 a/b/c a0 b/x b/y/z c", false, "c"},
		{"root dir", ListParams{Delimiter: "/"}, "a a-b a.b CP:a/ a0 CP:b/ c", false, "c"},
		{"in a/", ListParams{Prefix: "a/", Delimiter: "/"}, "a/ a/1 a/2 CP:a/b/", false, "a/b/"},
		{"prefix without delimiter", ListParams{Prefix: "a/"}, "a/ a/1 a/2 a/b/c", false, "a/b/c"},
		{"page ends on a common prefix", ListParams{Delimiter: "/", MaxKeys: 4}, "a a-b a.b CP:a/", true, "a/"},
		{"resume after a common prefix skips its keys", ListParams{Delimiter: "/", StartAfter: "a/", MaxKeys: 2}, "a0 CP:b/", true, "b/"},
		{"start after a key inside a prefix", ListParams{Delimiter: "/", StartAfter: "a/1"}, "CP:a/ a0 CP:b/ c", false, "c"},
		{"start after before prefix", ListParams{Prefix: "b/", StartAfter: "a"}, "b/x b/y/z", false, "b/y/z"},
		{"start after beyond prefix", ListParams{Prefix: "a/", StartAfter: "b"}, "", false, ""},
		{"exact max keys is not truncated", ListParams{Prefix: "b/", MaxKeys: 2}, "b/x b/y/z", false, "b/y/z"},
		{"multi-char delimiter", ListParams{Delimiter: "/b"}, "a a-b a.b a/ a/1 a/2 CP:a/b a0 b/x b/y/z c", false, "c"},
		{"no match", ListParams{Prefix: "zzz"}, "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.ListObjects("bkt", tt.p)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range pageEntries(res) {
				names = append(names, e.String())
			}
			if got := strings.Join(names, " "); got != tt.want || res.IsTruncated != tt.truncated || res.NextStartAfter != tt.next {
				t.Fatalf("got %q truncated=%v next=%q, want %q truncated=%v next=%q", got, res.IsTruncated, res.NextStartAfter, tt.want, tt.truncated, tt.next)
			}
		})
	}
	if _, err := s.ListObjects("nope", ListParams{}); err == nil {
		t.Fatal("listing a missing bucket succeeded")
	}
}

func TestPrefixSuccessor(t *testing.T) {
	tests := []struct {
		in, want string
		none     bool
	}{
		{in: "a/", want: "a0"},
		{in: "a", want: "b"},
		{in: "a\xff", want: "b"},
		{in: "\xff\xff", none: true},
		{in: "", none: true},
	}
	for _, tt := range tests {
		got := prefixSuccessor([]byte(tt.in))
		if tt.none != (got == nil) || (!tt.none && string(got) != tt.want) {
			t.Errorf("prefixSuccessor(%q) = %q, want %q (none=%v)", tt.in, got, tt.want, tt.none)
		}
	}
}

// BenchmarkListObjectsDelimiter lists the top level of a bucket of 100,000
// keys spread over 100 directories: seeking past whole common prefixes makes
// one page cost about 100 cursor seeks, not 100,000 steps.
func BenchmarkListObjectsDelimiter(b *testing.B) {
	s, err := OpenWithOptions(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateBucket("bkt", "", ""); err != nil {
		b.Fatal(err)
	}
	rec := objectRecord{ETag: md5hex(""), LastModified: time.Now().UTC()}
	// Bulk load through the metadata layer directly; PutObject per key would
	// dominate the benchmark's setup.
	err = s.db.Update(func(tx *bolt.Tx) error {
		objects := tx.Bucket(bktBuckets).Bucket([]byte("bkt")).Bucket(bktObjects)
		objects.FillPercent = 1 // keys arrive in order
		for i := 0; i < 100_000; i++ {
			if err := putJSON(objects, []byte(fmt.Sprintf("dir%03d/file%06d", i/1000, i)), rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := s.ListObjects("bkt", ListParams{Delimiter: "/"})
		if err != nil || len(res.CommonPrefixes) != 100 {
			b.Fatalf("got %d prefixes, %v", len(res.CommonPrefixes), err)
		}
	}
}

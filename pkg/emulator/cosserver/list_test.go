package cosserver

import (
	"encoding/xml"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/store"
)

type listResponse struct {
	Name                  string  `xml:"Name"`
	Prefix                string  `xml:"Prefix"`
	Marker                *string `xml:"Marker"`
	NextMarker            string  `xml:"NextMarker"`
	ContinuationToken     string  `xml:"ContinuationToken"`
	NextContinuationToken string  `xml:"NextContinuationToken"`
	KeyCount              *int    `xml:"KeyCount"`
	MaxKeys               int     `xml:"MaxKeys"`
	IsTruncated           bool    `xml:"IsTruncated"`
	EncodingType          string  `xml:"EncodingType"`
	Contents              []struct {
		Key          string `xml:"Key"`
		ETag         string `xml:"ETag"`
		Size         int64  `xml:"Size"`
		LastModified string `xml:"LastModified"`
		Owner        *owner `xml:"Owner"`
	} `xml:"Contents"`
	CommonPrefixes []struct {
		Prefix string `xml:"Prefix"`
	} `xml:"CommonPrefixes"`
}

// seed puts keys straight into the store (the listing is under test, not PUT).
func (e *env) seed(keys []string) {
	e.t.Helper()
	for _, k := range keys {
		if _, err := e.store.PutObject("bkt", k, strings.NewReader(k), store.ObjectMeta{}, nil); err != nil {
			e.t.Fatal(err)
		}
	}
}

// modelList is the expected full listing: keys and common prefixes in order.
func modelList(keys []string, prefix, delim string) []string {
	var out []string
	seen := map[string]bool{}
	sorted := slices.Clone(keys)
	sort.Strings(sorted)
	for _, k := range sorted {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if delim != "" {
			if i := strings.Index(rest, delim); i >= 0 {
				cp := prefix + rest[:i+len(delim)]
				if !seen[cp] {
					seen[cp] = true
					out = append(out, "P:"+cp)
				}
				continue
			}
		}
		out = append(out, "K:"+k)
	}
	return out
}

// walk pages through a listing with v1 or v2 and returns every entry.
func (e *env) walk(version int, prefix, delim string, maxKeys int) []string {
	e.t.Helper()
	var out []string
	token, marker := "", ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			e.t.Fatal("listing does not end")
		}
		q := url.Values{"prefix": {prefix}, "delimiter": {delim}, "max-keys": {fmt.Sprint(maxKeys)}}
		if version == 2 {
			q.Set("list-type", "2")
			if token != "" {
				q.Set("continuation-token", token)
			}
		} else if marker != "" {
			q.Set("marker", marker)
		}
		r := e.bearer(tokReader, "GET", "/bkt?"+q.Encode(), nil)
		if r.status != 200 {
			e.t.Fatalf("list: %d %s", r.status, r.body)
		}
		var res listResponse
		if err := xml.Unmarshal(r.body, &res); err != nil {
			e.t.Fatal(err)
		}
		n := len(res.Contents) + len(res.CommonPrefixes)
		if n > maxKeys {
			e.t.Fatalf("page of %d entries with max-keys %d", n, maxKeys)
		}
		// Order within a page is the order of the merged key space.
		var page []string
		for _, c := range res.Contents {
			page = append(page, "K:"+c.Key)
		}
		for _, p := range res.CommonPrefixes {
			page = append(page, "P:"+p.Prefix)
		}
		sort.Slice(page, func(i, j int) bool { return page[i][2:] < page[j][2:] })
		out = append(out, page...)
		if version == 2 {
			if res.KeyCount == nil || *res.KeyCount != n {
				e.t.Fatalf("KeyCount %v, entries %d", res.KeyCount, n)
			}
			if !res.IsTruncated {
				if res.NextContinuationToken != "" {
					e.t.Fatal("NextContinuationToken on the last page")
				}
				return out
			}
			token = res.NextContinuationToken
		} else {
			if res.Marker == nil {
				e.t.Fatal("v1 listing without Marker")
			}
			if !res.IsTruncated {
				return out
			}
			marker = res.NextMarker
		}
		if n == 0 {
			e.t.Fatal("truncated empty page")
		}
	}
}

func TestListPaginationAgainstModel(t *testing.T) {
	e := newEnv(t)
	var keys []string
	for i := 0; i < 3200; i++ {
		switch i % 4 {
		case 0:
			keys = append(keys, fmt.Sprintf("top-%04d", i))
		case 1:
			keys = append(keys, fmt.Sprintf("dir%02d/file-%04d", i%37, i))
		case 2:
			keys = append(keys, fmt.Sprintf("dir%02d/sub%d/deep-%04d", i%23, i%3, i))
		default:
			keys = append(keys, fmt.Sprintf("dir%02d/", i%41)) // directory markers
		}
	}
	keys = slices.Compact(sortedCopy(keys))
	e.seed(keys)
	tests := []struct {
		prefix, delim string
		maxKeys       int
	}{
		{"", "", 1000},
		{"", "", 333},
		{"", "/", 7},
		{"", "/", 1000},
		{"dir05/", "/", 3},
		{"dir05/", "", 50},
		{"dir1", "/", 4},
		{"top-", "/", 999},
		{"nothing", "/", 10},
		{"", "sub", 17},
	}
	for _, tc := range tests {
		want := modelList(keys, tc.prefix, tc.delim)
		for _, v := range []int{1, 2} {
			got := e.walk(v, tc.prefix, tc.delim, tc.maxKeys)
			if !slices.Equal(got, want) {
				t.Errorf("v%d prefix %q delim %q max %d: %d entries, want %d (first diff %s)",
					v, tc.prefix, tc.delim, tc.maxKeys, len(got), len(want), firstDiff(got, want))
			}
		}
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %q vs %q", i, a[i], b[i])
		}
	}
	return "length"
}

func TestListParameters(t *testing.T) {
	e := newEnv(t)
	e.seed([]string{"a", "b c/d", "b c/e", "q&x", "zz"})
	get := func(q string) listResponse {
		t.Helper()
		r := e.bearer(tokReader, "GET", "/bkt?"+q, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", q, r.status, r.body)
		}
		var res listResponse
		if err := xml.Unmarshal(r.body, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := get("list-type=2&start-after=b")
	if len(res.Contents) != 4 || res.Contents[0].Key != "b c/d" {
		t.Errorf("start-after: %+v", res.Contents)
	}
	res = get("list-type=2&encoding-type=url&delimiter=/")
	if res.EncodingType != "url" || len(res.CommonPrefixes) != 1 || res.CommonPrefixes[0].Prefix != "b%20c/" ||
		len(res.Contents) != 3 || res.Contents[1].Key != "q%26x" {
		t.Errorf("encoding-type=url: %+v", res)
	}
	if k, err := url.QueryUnescape(res.Contents[1].Key); err != nil || k != "q&x" {
		t.Errorf("encoded key does not decode: %q %v", k, err)
	}
	res = get("list-type=2&max-keys=0")
	if len(res.Contents) != 0 || res.IsTruncated || res.MaxKeys != 0 {
		t.Errorf("max-keys=0: %+v", res)
	}
	res = get("list-type=2&max-keys=5000")
	if res.MaxKeys != 1000 || len(res.Contents) != 5 {
		t.Errorf("max-keys capped: %d %d", res.MaxKeys, len(res.Contents))
	}
	res = get("list-type=2&fetch-owner=true&max-keys=1")
	if len(res.Contents) != 1 || res.Contents[0].Owner == nil || res.Contents[0].Owner.ID != testInstance ||
		!strings.HasPrefix(res.Contents[0].ETag, `"`) || res.Contents[0].Size != 1 || !strings.HasSuffix(res.Contents[0].LastModified, "Z") {
		t.Errorf("fetch-owner: %+v", res.Contents)
	}
	if res.KeyCount == nil || !res.IsTruncated || res.NextContinuationToken == "" {
		t.Errorf("truncated v2: %+v", res)
	}
	res = get("list-type=2&max-keys=1")
	if res.Contents[0].Owner != nil {
		t.Error("owner without fetch-owner")
	}
	res = get("max-keys=2&delimiter=/")
	if res.Marker == nil || res.KeyCount != nil || !res.IsTruncated || res.NextMarker != "b c/" || res.Contents[0].Owner == nil {
		t.Errorf("v1 page: %+v", res)
	}
	res = get("marker=" + url.QueryEscape("b c/") + "&delimiter=/")
	if len(res.Contents) != 2 || res.Contents[0].Key != "q&x" || len(res.CommonPrefixes) != 0 {
		t.Errorf("v1 resume after a common prefix: %+v", res)
	}
	for _, q := range []string{"list-type=2&continuation-token=!!!", "list-type=2&max-keys=-1", "list-type=2&max-keys=x", "encoding-type=gzip"} {
		expect(t, q, e.bearer(tokReader, "GET", "/bkt?"+q, nil), 400, "InvalidArgument")
	}
}

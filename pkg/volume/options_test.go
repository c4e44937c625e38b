package volume

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	def := DefaultOptions()
	tests := []struct {
		in      string
		check   func(Options) bool
		wantErr string
	}{
		{"", func(o Options) bool { return o.PartSize == def.PartSize && !o.ReadOnly }, ""},
		{"uid=1000,gid=2000,file_mode=0600,dir_mode=0700", func(o Options) bool {
			return o.UID == 1000 && o.GID == 2000 && o.FileMode == 0o600 && o.DirMode == 0o700
		}, ""},
		{"file-mode=0640", func(o Options) bool { return o.FileMode == 0o640 }, ""},
		{"allow_other,ro", func(o Options) bool { return o.AllowOther && o.ReadOnly }, ""},
		{"ro,rw", func(o Options) bool { return !o.ReadOnly }, ""},
		{"prefix=team/data,attr_ttl=1s,entry_ttl=2m,negative_ttl=0s", func(o Options) bool {
			return o.Prefix == "team/data/" && o.AttrTTL == time.Second && o.EntryTTL == 2*time.Minute && o.NegativeTTL == 0
		}, ""},
		{"part_size=16MiB,upload_concurrency=8,memory_limit=1GiB,multipart_threshold=32M,readahead_max=0", func(o Options) bool {
			return o.PartSize == 16*MiB && o.UploadConcurrency == 8 && o.MemoryLimit == GiB && o.MultipartThreshold == 32*MiB && o.ReadaheadMax == 0
		}, ""},
		{"part_size=16Mi,memory_limit=1Gi", func(o Options) bool { return o.PartSize == 16*MiB && o.MemoryLimit == GiB }, ""},
		{" uid=1 , ,gid=2", func(o Options) bool { return o.UID == 1 && o.GID == 2 }, ""},
		{"temp_dir=/var/tmp", func(o Options) bool { return o.TempDir == "/var/tmp" }, ""},
		{"cache_memory=64MiB,cache_size=10Gi,cache_dir=/var/cache/cosmount", func(o Options) bool {
			return o.CacheMemory == 64*MiB && o.CacheSize == 10*GiB && o.CacheDir == "/var/cache/cosmount"
		}, ""},
		{"cache_dir=cache", nil, "cache_dir"},
		{"cache_size=-1", nil, "cache_size"},
		{"cache_memory=lots", nil, "cache_memory"},
		{"cache_memory=64KiB", nil, `cache_memory="64KiB": must be 0 (off) or at least 1MiB`},
		{"cache_size=512KiB", nil, `cache_size="512KiB": must be 0 (off) or at least 1MiB`},
		{"bogus=1", nil, `unknown mount option "bogus" (known: prefix, uid`},
		{"noatime", nil, `mount option noatime: is an option of the cosmount command`},
		{"endpoint=https://x", nil, `mount option endpoint="https://x": is an option of the cosmount command`},
		{"ro=1", nil, "ro=\"1\": takes no value"},
		{"uid", nil, "uid: needs a value"},
		{"uid=-1", nil, "uid"},
		{"file_mode=0999", nil, "file_mode"},
		{"file_mode=01777", nil, "file_mode"},
		{"attr_ttl=soon", nil, "attr_ttl"},
		{"attr_ttl=-1s", nil, "attr_ttl"},
		{"part_size=1MiB", nil, "part_size"},
		{"part_size=1TB", nil, "part_size"},
		{"part_size=lots", nil, "part_size"},
		{"upload_concurrency=0", nil, "upload_concurrency"},
		{"upload_concurrency=100", nil, "upload_concurrency"},
		{"memory_limit=8MiB", nil, "memory_limit"},
		{"prefix=/abs", nil, "prefix"},
		{"temp_dir=relative", nil, "temp_dir"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			o, err := ParseOptions(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				var oe *OptionError
				if !errors.As(err, &oe) {
					t.Errorf("error %T is not an *OptionError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Errorf("parsed %+v", o)
			}
		})
	}
}

func TestApplyScopes(t *testing.T) {
	for _, tc := range []struct {
		list, want string
	}{
		{"uid=1,ro,part-size=16MiB", ""},
		{"temp_dir=/tmp", "temp_dir=\"/tmp\": is set by the node's administrator"},
		{"cache_dir=/var/cache", "cache_dir=\"/var/cache\": is set by the node's administrator"},
		{"cache_size=1GiB,cache_memory=64MiB", ""},
		{"prefix=x", "prefix=\"x\": is given by the volume's attributes"},
	} {
		o := DefaultOptions()
		err := o.Apply(tc.list, ScopeVolume)
		if tc.want == "" {
			if err != nil {
				t.Errorf("Apply(%q) = %v", tc.list, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Apply(%q) = %v, want %q", tc.list, err, tc.want)
		}
	}
	// An unknown option's error lists only what the caller may use.
	o := DefaultOptions()
	err := o.Apply("nope=1", ScopeVolume)
	if err == nil || strings.Contains(err.Error(), "temp_dir") || !strings.Contains(err.Error(), "part_size") {
		t.Errorf("unknown option error %v should list the volume options only", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, in := range []string{
		"",
		"uid=1000,gid=1000,file_mode=0640,dir_mode=0750,allow_other,ro",
		"attr_ttl=1m30s,entry_ttl=0s,negative_ttl=100ms",
		"part_size=16MiB,upload_concurrency=16,memory_limit=1GiB,multipart_threshold=5000000,readahead_max=0",
		"prefix=a/b,temp_dir=/var/tmp",
		"cache_memory=64MiB,cache_size=10GiB,cache_dir=/var/cache/cosmount",
		"readahead_max=1TB",
	} {
		o, err := ParseOptions(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		enc := o.Encode()
		back, err := ParseOptions(enc)
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", enc, in, err)
		}
		if back != o {
			t.Errorf("%q -> %q -> %+v, want %+v", in, enc, back, o)
		}
	}
	if got := DefaultOptions().Encode(); got != "" {
		t.Errorf("defaults encode as %q, want nothing", got)
	}
	o, _ := ParseOptions("ro,uid=7,part_size=16MiB")
	if got, want := o.Encode(), "uid=7,ro,part_size=16MiB"; got != want {
		t.Errorf("Encode = %q, want the grammar's order %q", got, want)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "512KiB": 512 * KiB, "16M": 16 * MiB, "16Mi": 16 * MiB, "1GiB": GiB, "2G": 2 * GiB,
		"5MB": 5000000, "7B": 7, "1TB": 1000 * 1000 * 1000 * 1000, "2Ti": 2 * TiB, "3k": 3 * KiB, " 8 MiB ": 8 * MiB,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "+1", "1.5GiB", "99999999999999GiB", "1 2", "0x10", "1e6"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	for _, n := range []int64{0, 1, 1023, KiB, 5 * MiB, 5*MiB + 1, 3 * GiB, 2 * TiB} {
		if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
			t.Errorf("FormatSize(%d) = %q does not parse back: %d, %v", n, FormatSize(n), back, err)
		}
	}
}

// FuzzParseSize: no panic, and an accepted size formats and parses back.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "16MiB", "16Mi", "1TB", "99999999999999GiB", "-1", "1.5G", "", "B", " 7 k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
		if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d; FormatSize gives %q which parses to %d, %v", s, n, FormatSize(n), back, err)
		}
	})
}

// FuzzParseOptions: no panic; a refusal is an error naming an option; an
// accepted list survives Encode and a second parse unchanged, and a
// volume-scope Apply never lets a node-scope option through.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		"", "uid=1000,gid=1000,file-mode=0640,allow_other,ro", "part_size=16Mi,memory_limit=1GiB",
		"attr_ttl=1s,entry_ttl=1h,negative_ttl=0", "temp_dir=/tmp,prefix=a/b", "ro=1", "=,,=", "upload_concurrency=64",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOptions(s)
		if err != nil {
			if !strings.Contains(err.Error(), "mount option ") {
				t.Fatalf("ParseOptions(%q) error %q names no option", s, err)
			}
		} else {
			back, err := ParseOptions(o.Encode())
			if err != nil || back != o {
				t.Fatalf("ParseOptions(%q) = %+v; Encode %q parses to %+v, %v", s, o, o.Encode(), back, err)
			}
		}
		v := DefaultOptions()
		if err := v.Apply(s, ScopeVolume); err == nil && (v.TempDir != "" || v.Prefix != "") {
			t.Fatalf("Apply(%q, ScopeVolume) set a node or source option: %+v", s, v)
		}
	})
}

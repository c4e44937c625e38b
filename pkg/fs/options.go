package fs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Size units accepted by ParseMountOptions.
const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	minPartSize = 5 * MiB // S3: every multipart part but the last
	maxPartSize = 5 * GiB
	maxParts    = 10000
)

// Options configure the filesystem. Start from DefaultOptions (or
// ParseMountOptions): New fills zero modes, PartSize, UploadConcurrency,
// MemoryLimit and MultipartThreshold with defaults, but a zero TTL means "do
// not cache" and a zero ReadaheadMax means "no readahead".
type Options struct {
	// Prefix is prepended to every object key ("team/" shows only that subtree).
	Prefix string
	// UID, GID and the modes are shown for entries without s3fs metadata.
	UID, GID          uint32
	FileMode, DirMode os.FileMode
	// AllowOther lets users other than the mounter use the mount.
	AllowOther bool
	// ReadOnly mounts read-only; every modifying operation fails with EROFS.
	ReadOnly bool
	// AttrTTL is how long attributes are trusted (here and by the kernel).
	AttrTTL time.Duration
	// EntryTTL is how long a directory listing and name lookups are trusted.
	EntryTTL time.Duration
	// NegativeTTL is how long "no such name" is remembered.
	NegativeTTL time.Duration
	// PartSize is the multipart part size (5 MiB .. 5 GiB).
	PartSize int64
	// UploadConcurrency is the number of parts of one file uploaded at once.
	UploadConcurrency int
	// MemoryLimit bounds all write and read buffers of the mount, in bytes.
	MemoryLimit int64
	// MultipartThreshold is the size from which a sequential new file streams
	// as a multipart upload while it is written.
	MultipartThreshold int64
	// TempDir holds the temporary files of random writes and read-modify-write
	// ("" means os.TempDir()).
	TempDir string
	// ReadaheadMax is the largest readahead window of one open file; 0 turns
	// readahead off.
	ReadaheadMax int64
	// Logger receives structured logs; the zero value means klog's default.
	Logger klog.Logger
}

// DefaultOptions returns the defaults: uid/gid 0, 0644/0755, 5 s TTLs, 8 MiB
// parts, 4 parts in flight, 256 MiB of buffers, multipart from 16 MiB,
// readahead up to 64 MiB.
func DefaultOptions() Options {
	return Options{
		FileMode:           0o644,
		DirMode:            0o755,
		AttrTTL:            5 * time.Second,
		EntryTTL:           5 * time.Second,
		NegativeTTL:        5 * time.Second,
		PartSize:           8 * MiB,
		UploadConcurrency:  4,
		MemoryLimit:        256 * MiB,
		MultipartThreshold: 16 * MiB,
		ReadaheadMax:       64 * MiB,
	}
}

// withDefaults fills the fields whose zero value cannot be meant literally.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.FileMode == 0 {
		o.FileMode = d.FileMode
	}
	if o.DirMode == 0 {
		o.DirMode = d.DirMode
	}
	if o.PartSize == 0 {
		o.PartSize = d.PartSize
	}
	if o.UploadConcurrency == 0 {
		o.UploadConcurrency = d.UploadConcurrency
	}
	if o.MemoryLimit == 0 {
		o.MemoryLimit = d.MemoryLimit
	}
	if o.MultipartThreshold == 0 {
		o.MultipartThreshold = d.MultipartThreshold
	}
	if o.Logger.GetSink() == nil {
		o.Logger = klog.Background()
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	return o
}

// Validate reports every invalid option, naming it.
func (o Options) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("option %s: %s", name, fmt.Sprintf(format, args...)))
	}
	if strings.HasPrefix(o.Prefix, "/") {
		bad("prefix", "%q must not start with /", o.Prefix)
	}
	if strings.Contains(o.Prefix, "//") {
		bad("prefix", "%q must not contain an empty path element", o.Prefix)
	}
	if o.FileMode&^os.ModePerm != 0 {
		bad("file_mode", "%#o has bits other than permissions", uint32(o.FileMode))
	}
	if o.DirMode&^os.ModePerm != 0 {
		bad("dir_mode", "%#o has bits other than permissions", uint32(o.DirMode))
	}
	for _, ttl := range []struct {
		name string
		d    time.Duration
	}{{"attr_ttl", o.AttrTTL}, {"entry_ttl", o.EntryTTL}, {"negative_ttl", o.NegativeTTL}} {
		if ttl.d < 0 {
			bad(ttl.name, "%v is negative", ttl.d)
		}
	}
	if o.PartSize < minPartSize || o.PartSize > maxPartSize {
		bad("part_size", "%d must be between 5 MiB and 5 GiB", o.PartSize)
	}
	if o.UploadConcurrency < 1 || o.UploadConcurrency > 64 {
		bad("upload_concurrency", "%d must be between 1 and 64", o.UploadConcurrency)
	}
	// One part being filled and one in flight is the least a streaming
	// upload can make progress with.
	if o.MemoryLimit < 2*o.PartSize {
		bad("memory_limit", "%d must be at least twice part_size (%d)", o.MemoryLimit, o.PartSize)
	}
	if o.MultipartThreshold < 1 {
		bad("multipart_threshold", "%d must be positive", o.MultipartThreshold)
	}
	if o.ReadaheadMax < 0 {
		bad("readahead_max", "%d is negative", o.ReadaheadMax)
	}
	if o.TempDir != "" {
		if st, err := os.Stat(o.TempDir); err != nil || !st.IsDir() {
			bad("temp_dir", "%q is not a directory", o.TempDir)
		}
	}
	return errors.Join(errs...)
}

// ParseMountOptions parses the comma form used by mount(8) and PV
// mountOptions, starting from DefaultOptions, for example
// "uid=1000,gid=1000,file_mode=0644,allow_other,ro,part_size=16MiB".
// An unknown option is an error that names it.
func ParseMountOptions(s string) (Options, error) {
	o := DefaultOptions()
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, hasVal := strings.Cut(item, "=")
		if err := o.set(name, val, hasVal); err != nil {
			return Options{}, err
		}
	}
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

func (o *Options) set(name, val string, hasVal bool) error {
	flag := func(v *bool, to bool) error {
		if hasVal {
			return fmt.Errorf("mount option %s takes no value", name)
		}
		*v = to
		return nil
	}
	wrap := func(err error) error {
		if err != nil {
			return fmt.Errorf("mount option %s=%q: %w", name, val, err)
		}
		return nil
	}
	switch name {
	case "allow_other":
		return flag(&o.AllowOther, true)
	case "ro":
		return flag(&o.ReadOnly, true)
	case "rw":
		return flag(&o.ReadOnly, false)
	}
	if !hasVal {
		return fmt.Errorf("unknown mount option %q (or it needs a value)", name)
	}
	switch name {
	case "uid", "gid":
		n, err := strconv.ParseUint(val, 10, 32)
		if name == "uid" {
			o.UID = uint32(n)
		} else {
			o.GID = uint32(n)
		}
		return wrap(err)
	case "file_mode", "dir_mode":
		n, err := strconv.ParseUint(val, 8, 32)
		if err == nil && n&^0o777 != 0 {
			err = errors.New("only permission bits (at most 0777) are allowed")
		}
		if name == "file_mode" {
			o.FileMode = os.FileMode(n)
		} else {
			o.DirMode = os.FileMode(n)
		}
		return wrap(err)
	case "prefix":
		o.Prefix = val
		return nil
	case "temp_dir":
		o.TempDir = val
		return nil
	case "attr_ttl", "entry_ttl", "negative_ttl":
		d, err := time.ParseDuration(val)
		switch name {
		case "attr_ttl":
			o.AttrTTL = d
		case "entry_ttl":
			o.EntryTTL = d
		default:
			o.NegativeTTL = d
		}
		return wrap(err)
	case "upload_concurrency":
		n, err := strconv.Atoi(val)
		o.UploadConcurrency = n
		return wrap(err)
	case "part_size", "memory_limit", "multipart_threshold", "readahead_max":
		n, err := ParseSize(val)
		switch name {
		case "part_size":
			o.PartSize = n
		case "memory_limit":
			o.MemoryLimit = n
		case "multipart_threshold":
			o.MultipartThreshold = n
		default:
			o.ReadaheadMax = n
		}
		return wrap(err)
	}
	return fmt.Errorf("unknown mount option %q", name)
}

// ParseSize parses a byte count with an optional unit: 4096, 512KiB, 16MiB,
// 1GiB, or the short binary forms 512K, 16M, 1G (kB, MB, GB are decimal).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB}, {"TiB", 1 << 40},
		{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"K", KiB}, {"k", KiB}, {"M", MiB}, {"G", GiB}, {"T", 1 << 40}, {"B", 1},
	}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if n < 0 || (n > 0 && mult > (1<<62)/n) {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return n * mult, nil
}

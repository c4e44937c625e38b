package volume

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Limits of the object store that bound the options.
const (
	MinPartSize = 5 * MiB // S3: every multipart part but the last
	MaxPartSize = 5 * GiB
	// MaxUploadConcurrency bounds parts of one file in flight.
	MaxUploadConcurrency = 64
)

// Options are the mount options of one volume: what `cosmount mount -o`
// takes, what a PersistentVolume's or StorageClass's mountOptions may say
// (see Scope), and what the node plugin hands to a server. The zero value of
// a field means "not set" only where WithDefaults says so; start from
// DefaultOptions or ParseOptions.
type Options struct {
	// Prefix is prepended to every object key ("team/" shows only that
	// subtree). It ends in "/" once normalized.
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
	// ReadaheadMax is the largest readahead window of one open file; 0 turns
	// readahead off.
	ReadaheadMax int64
	// TempDir holds the temporary files of random writes and read-modify-write
	// ("" means os.TempDir()).
	TempDir string
	// TempLimit caps the bytes of all temporary files of the mount; a write
	// past it fails with ENOSPC, so one volume cannot fill the node's disk.
	// 0 means no cap of the volume's own: under a mounter the node's
	// maximum applies (see Spec.Args), standalone there is none.
	TempLimit int64
	// CacheMemory bounds the read cache in memory, in bytes; 0 turns it
	// off. It comes on top of MemoryLimit.
	CacheMemory int64
	// CacheSize bounds the read cache on disk, under CacheDir; 0 turns it
	// off.
	CacheSize int64
	// CacheDir is a node-local directory for the disk read cache; each
	// server keeps its blocks in a subdirectory of its own, removed when it
	// exits.
	CacheDir string
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

// WithDefaults fills the fields whose zero value cannot be meant literally
// (modes, sizes, concurrency) and normalizes the prefix. A zero TTL means
// "do not cache" and a zero ReadaheadMax "no readahead", so those stay.
func (o Options) WithDefaults() Options {
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
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	return o
}

// Validate reports every invalid value, each error naming its option. It
// checks form and ranges only; whether TempDir exists is the server's
// business (the node plugin does not share its filesystem).
func (o Options) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, &OptionError{Option: name, Reason: fmt.Sprintf(format, args...)})
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
	if o.PartSize < MinPartSize || o.PartSize > MaxPartSize {
		bad("part_size", "%s must be between 5MiB and 5GiB", FormatSize(o.PartSize))
	}
	if o.UploadConcurrency < 1 || o.UploadConcurrency > MaxUploadConcurrency {
		bad("upload_concurrency", "%d must be between 1 and %d", o.UploadConcurrency, MaxUploadConcurrency)
	}
	// One part being filled and one in flight is the least a streaming
	// upload can make progress with.
	if o.MemoryLimit < 2*o.PartSize {
		bad("memory_limit", "%s must be at least twice part_size (%s)", FormatSize(o.MemoryLimit), FormatSize(o.PartSize))
	}
	if o.MultipartThreshold < 1 {
		bad("multipart_threshold", "%d must be positive", o.MultipartThreshold)
	}
	if o.ReadaheadMax < 0 {
		bad("readahead_max", "%d is negative", o.ReadaheadMax)
	}
	if o.TempLimit < 0 {
		bad("temp_limit", "%d is negative", o.TempLimit)
	}
	// The read cache holds 1 MiB blocks.
	if o.CacheMemory < 0 {
		bad("cache_memory", "%d is negative", o.CacheMemory)
	} else if o.CacheMemory > 0 && o.CacheMemory < MiB {
		errs = append(errs, &OptionError{Option: "cache_memory", Value: FormatSize(o.CacheMemory), Reason: "must be 0 (off) or at least 1MiB"})
	}
	if o.CacheSize < 0 {
		bad("cache_size", "%d is negative", o.CacheSize)
	} else if o.CacheSize > 0 && o.CacheSize < MiB {
		errs = append(errs, &OptionError{Option: "cache_size", Value: FormatSize(o.CacheSize), Reason: "must be 0 (off) or at least 1MiB"})
	}
	return errors.Join(errs...)
}

// Scope says who may set an option.
type Scope int

const (
	// ScopeVolume options describe how one volume is served; whoever writes
	// the volume (a PV's or StorageClass's mountOptions) may set them.
	ScopeVolume Scope = iota
	// ScopeSource options are part of what is mounted, not how: in
	// Kubernetes the volume attributes give them (bucketName, prefix).
	ScopeSource
	// ScopeNode options name the node's own resources (paths on the node);
	// only the person running `cosmount mount` or the cluster admin sets them.
	ScopeNode
	// ScopeCommand options are not options of a volume at all: they are the
	// `cosmount mount` command's own flags spelled as mount options, for
	// mount(8), /etc/fstab and the mount helper, which pass everything in one -o
	// list (endpoint=..., trusted_profile_id=..., api_key_file=..., log_file=...,
	// foreground), and the generic mount(8) options such a list carries
	// (_netdev, nofail, noauto, defaults, ...), which the command accepts and
	// ignores. They say where the bucket is, who the server is and how its
	// process runs; in Kubernetes the volume's attributes and the node's
	// mounter decide all of that, so Options has no field for them and Apply
	// refuses them, whatever scopes it is given. SplitCommandOptions takes
	// them out of a list first.
	ScopeCommand
)

func (s Scope) String() string {
	switch s {
	case ScopeVolume:
		return "volume"
	case ScopeSource:
		return "source"
	case ScopeNode:
		return "node"
	case ScopeCommand:
		return "command"
	}
	return "Scope(" + strconv.Itoa(int(s)) + ")"
}

// OptionError is a refused mount option. Its message names the option, so a
// caller can hand it to the user as is (the CSI driver answers
// InvalidArgument with it).
type OptionError struct {
	Option string
	Value  string // the value as given, if any
	Reason string
	// Unknown: the grammar has no such option (Reason lists the known ones).
	Unknown bool
}

func (e *OptionError) Error() string {
	if e.Unknown {
		return fmt.Sprintf("unknown mount option %q (%s)", e.Option, e.Reason)
	}
	if e.Value != "" {
		return fmt.Sprintf("mount option %s=%q: %s", e.Option, e.Value, e.Reason)
	}
	return fmt.Sprintf("mount option %s: %s", e.Option, e.Reason)
}

// option is one entry of the grammar.
type option struct {
	name  string
	scope Scope
	// flag options take no value; set is called with "".
	flag bool
	// set parses val into o.
	set func(o *Options, val string) error
	// get renders the option's value in o, and whether it differs from d
	// (the defaults), for Encode.
	get func(o, d *Options) (string, bool)
}

// optionTable is the whole mount-option grammar, in the order Encode writes.
var optionTable = []option{
	{name: "prefix", scope: ScopeSource,
		set: func(o *Options, v string) error { o.Prefix = v; return nil },
		get: func(o, d *Options) (string, bool) { return o.Prefix, o.Prefix != d.Prefix }},
	{name: "uid", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseUint32(v, &o.UID) },
		get: func(o, d *Options) (string, bool) { return strconv.FormatUint(uint64(o.UID), 10), o.UID != d.UID }},
	{name: "gid", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseUint32(v, &o.GID) },
		get: func(o, d *Options) (string, bool) { return strconv.FormatUint(uint64(o.GID), 10), o.GID != d.GID }},
	{name: "file_mode", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseMode(v, &o.FileMode) },
		get: func(o, d *Options) (string, bool) {
			return fmt.Sprintf("%04o", uint32(o.FileMode)), o.FileMode != d.FileMode
		}},
	{name: "dir_mode", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseMode(v, &o.DirMode) },
		get: func(o, d *Options) (string, bool) {
			return fmt.Sprintf("%04o", uint32(o.DirMode)), o.DirMode != d.DirMode
		}},
	{name: "allow_other", scope: ScopeVolume, flag: true,
		set: func(o *Options, _ string) error { o.AllowOther = true; return nil },
		get: func(o, d *Options) (string, bool) { return "", o.AllowOther && !d.AllowOther }},
	{name: "ro", scope: ScopeVolume, flag: true,
		set: func(o *Options, _ string) error { o.ReadOnly = true; return nil },
		get: func(o, d *Options) (string, bool) { return "", o.ReadOnly && !d.ReadOnly }},
	{name: "rw", scope: ScopeVolume, flag: true,
		set: func(o *Options, _ string) error { o.ReadOnly = false; return nil },
		get: func(o, d *Options) (string, bool) { return "", false }},
	{name: "attr_ttl", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseTTL(v, &o.AttrTTL) },
		get: func(o, d *Options) (string, bool) { return o.AttrTTL.String(), o.AttrTTL != d.AttrTTL }},
	{name: "entry_ttl", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseTTL(v, &o.EntryTTL) },
		get: func(o, d *Options) (string, bool) { return o.EntryTTL.String(), o.EntryTTL != d.EntryTTL }},
	{name: "negative_ttl", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseTTL(v, &o.NegativeTTL) },
		get: func(o, d *Options) (string, bool) { return o.NegativeTTL.String(), o.NegativeTTL != d.NegativeTTL }},
	{name: "part_size", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.PartSize) },
		get: func(o, d *Options) (string, bool) { return FormatSize(o.PartSize), o.PartSize != d.PartSize }},
	{name: "upload_concurrency", scope: ScopeVolume,
		set: func(o *Options, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("not a whole number")
			}
			o.UploadConcurrency = n
			return nil
		},
		get: func(o, d *Options) (string, bool) {
			return strconv.Itoa(o.UploadConcurrency), o.UploadConcurrency != d.UploadConcurrency
		}},
	{name: "memory_limit", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.MemoryLimit) },
		get: func(o, d *Options) (string, bool) { return FormatSize(o.MemoryLimit), o.MemoryLimit != d.MemoryLimit }},
	{name: "multipart_threshold", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.MultipartThreshold) },
		get: func(o, d *Options) (string, bool) {
			return FormatSize(o.MultipartThreshold), o.MultipartThreshold != d.MultipartThreshold
		}},
	{name: "readahead_max", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.ReadaheadMax) },
		get: func(o, d *Options) (string, bool) {
			return FormatSize(o.ReadaheadMax), o.ReadaheadMax != d.ReadaheadMax
		}},
	// A volume may lower its temporary space; the node's maximum (the
	// mounter's --temp-limit) caps it, see Spec.Args.
	{name: "temp_limit", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.TempLimit) },
		get: func(o, d *Options) (string, bool) { return FormatSize(o.TempLimit), o.TempLimit != d.TempLimit }},
	{name: "temp_dir", scope: ScopeNode,
		set: func(o *Options, v string) error {
			if !strings.HasPrefix(v, "/") {
				return errors.New("must be an absolute path")
			}
			o.TempDir = v
			return nil
		},
		get: func(o, d *Options) (string, bool) { return o.TempDir, o.TempDir != d.TempDir }},
	{name: "cache_memory", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.CacheMemory) },
		get: func(o, d *Options) (string, bool) {
			return FormatSize(o.CacheMemory), o.CacheMemory != d.CacheMemory
		}},
	{name: "cache_size", scope: ScopeVolume,
		set: func(o *Options, v string) error { return parseSizeInto(v, &o.CacheSize) },
		get: func(o, d *Options) (string, bool) { return FormatSize(o.CacheSize), o.CacheSize != d.CacheSize }},
	{name: "cache_dir", scope: ScopeNode,
		set: func(o *Options, v string) error {
			if !strings.HasPrefix(v, "/") {
				return errors.New("must be an absolute path")
			}
			o.CacheDir = v
			return nil
		},
		get: func(o, d *Options) (string, bool) { return o.CacheDir, o.CacheDir != d.CacheDir }},
}

// lookupOption finds name in the grammar; '-' and '_' are interchangeable
// (file-mode = file_mode), as Kubernetes users write both.
func lookupOption(name string) (*option, bool) {
	name = strings.ReplaceAll(name, "-", "_")
	for i := range optionTable {
		if optionTable[i].name == name {
			return &optionTable[i], true
		}
	}
	return nil, false
}

// OptionNames lists the options of the given scopes (all when none given).
func OptionNames(scopes ...Scope) []string {
	var out []string
	for _, op := range optionTable {
		if len(scopes) == 0 || scopeIn(op.scope, scopes) {
			out = append(out, op.name)
		}
	}
	return out
}

func scopeIn(s Scope, list []Scope) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Apply parses a comma-separated list ("uid=1000,ro,part_size=16MiB") into
// o, accepting only options of the given scopes (all when none given).
// Blank items are skipped. The first refused item is returned as an
// *OptionError naming it. Apply does not run Validate.
func (o *Options) Apply(list string, scopes ...Scope) error {
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, hasVal := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		op, ok := lookupOption(name)
		if !ok && isCommandOption(name) {
			return &OptionError{Option: name, Value: val, Reason: "is an option of the cosmount command (mount(8), fstab), not of a volume: " +
				"in Kubernetes the volume's attributes and the node set it"}
		}
		if !ok {
			// The value is not kept: an unknown name may carry anything,
			// a secret typed in the wrong place among others.
			return &OptionError{Option: name, Unknown: true, Reason: "known: " + strings.Join(OptionNames(scopes...), ", ")}
		}
		if len(scopes) > 0 && !scopeIn(op.scope, scopes) {
			why := "is set by the node's administrator, not by a volume"
			if op.scope == ScopeSource {
				why = "is given by the volume's attributes (bucketName, prefix), not as a mount option"
			}
			return &OptionError{Option: op.name, Value: val, Reason: why}
		}
		switch {
		case op.flag && hasVal:
			return &OptionError{Option: op.name, Value: val, Reason: "takes no value"}
		case !op.flag && !hasVal:
			return &OptionError{Option: op.name, Reason: "needs a value"}
		}
		if err := op.set(o, strings.TrimSpace(val)); err != nil {
			return &OptionError{Option: op.name, Value: val, Reason: err.Error()}
		}
	}
	return nil
}

// ParseOptions parses a comma-separated option list of any scope on top of
// DefaultOptions and validates the result: the form of `cosmount mount -o`.
func ParseOptions(list string) (Options, error) {
	o := DefaultOptions()
	if err := o.Apply(list); err != nil {
		return Options{}, err
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// Encode renders the options that differ from the defaults in the grammar's
// order, so ParseOptions(o.Encode()) == o for validated options. It is how
// the node plugin passes options to a server: one grammar both ways.
func (o Options) Encode() string {
	d := DefaultOptions()
	var items []string
	for _, op := range optionTable {
		v, set := op.get(&o, &d)
		if !set {
			continue
		}
		if op.flag {
			items = append(items, op.name)
		} else {
			items = append(items, op.name+"="+v)
		}
	}
	return strings.Join(items, ",")
}

func parseUint32(v string, dst *uint32) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return errors.New("not a number between 0 and 4294967295")
	}
	*dst = uint32(n)
	return nil
}

func parseMode(v string, dst *os.FileMode) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil {
		return errors.New("not an octal mode such as 0644")
	}
	if n&^0o777 != 0 {
		return errors.New("only permission bits (at most 0777) are allowed")
	}
	*dst = os.FileMode(n)
	return nil
}

func parseTTL(v string, dst *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("not a duration such as 5s or 1m")
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	*dst = d
	return nil
}

func parseSizeInto(v string, dst *int64) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*dst = n
	return nil
}

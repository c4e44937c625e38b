package fs

import (
	"fmt"
	"os"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/volume"
)

// Size units, for readability of the package's own code and tests.
const (
	KiB = volume.KiB
	MiB = volume.MiB
	GiB = volume.GiB

	maxParts = 10000 // S3: parts of one multipart upload
)

// Options configure the filesystem: the mount options, whose grammar,
// defaults and validation pkg/volume owns, and a logger. Start from
// DefaultOptions (or volume.ParseOptions): New fills zero modes, PartSize,
// UploadConcurrency, MemoryLimit and MultipartThreshold with defaults, but a
// zero TTL means "do not cache" and a zero ReadaheadMax means "no readahead".
type Options struct {
	volume.Options
	// Logger receives structured logs; the zero value means klog's default.
	Logger klog.Logger
	// FSName is the mount's source in the mount table (what df and findmnt
	// show, and what mount -a compares with an fstab line's first field);
	// empty means "cosmount".
	FSName string
	// Ops, if set, is told about every FUSE request answered (metrics).
	Ops OpObserver
}

// DefaultOptions returns volume.DefaultOptions with klog's logger.
func DefaultOptions() Options {
	return Options{Options: volume.DefaultOptions()}
}

// withDefaults fills the fields whose zero value cannot be meant literally.
func (o Options) withDefaults() Options {
	o.Options = o.Options.WithDefaults()
	if o.Logger.GetSink() == nil {
		o.Logger = klog.Background()
	}
	return o
}

// Validate reports every invalid option, naming it: the mount options'
// rules, and that the temporary directory exists on this machine.
func (o Options) Validate() error {
	if err := o.Options.Validate(); err != nil {
		return err
	}
	if o.TempDir != "" {
		if st, err := os.Stat(o.TempDir); err != nil || !st.IsDir() {
			return &volume.OptionError{Option: "temp_dir", Value: o.TempDir, Reason: "is not a directory"}
		}
	}
	if o.CacheSize > 0 && o.CacheDir == "" {
		return &volume.OptionError{Option: "cache_size", Value: volume.FormatSize(o.CacheSize),
			Reason: "needs cache_dir, a directory on this machine (in Kubernetes the node's administrator sets it)"}
	}
	if o.CacheDir != "" {
		if st, err := os.Stat(o.CacheDir); err != nil || !st.IsDir() {
			return &volume.OptionError{Option: "cache_dir", Value: o.CacheDir, Reason: "is not a directory"}
		}
	}
	return nil
}

// String shows the options in their mount -o form.
func (o Options) String() string { return fmt.Sprintf("Options{%s}", o.Options.Encode()) }

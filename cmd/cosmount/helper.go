package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cosmount/cosmount/pkg/volume"
)

// cosmount as mount(8)'s helper. `mount -t fuse.cosmount SOURCE DIR -o
// OPTIONS` and an /etc/fstab line of type fuse.cosmount run
//
//	/sbin/mount.fuse.cosmount SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]
//
// (a link to this binary), or, without that link, fuse3's mount.fuse3,
// which runs `cosmount SOURCE DIR -o OPTIONS` from PATH after dropping
// _netdev, nofail and noauto. Either way the options carry everything,
// since every flag of `cosmount mount` has an -o spelling, and the mount
// detaches like `cosmount mount` does: the helper returns once the mount is
// live, which is what mount(8) and systemd wait for.

// defaultPATH is the search path of a helper started without one.
const defaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// helperNames are the names under which this binary is mount(8)'s helper.
var helperNames = []string{"mount.fuse.cosmount", "mount.cosmount"}

// Exit codes of mount(8), which a helper's caller reads: wrong usage, and a
// failed mount.
const (
	exitUsage      = 1
	exitMountFails = 32
)

// helperInvocation tells whether argv is a helper call and returns the
// helper's arguments. Called by mount.fuse3 the first argument is the
// source, not a subcommand, and the second an existing directory; anything
// else is left to the subcommands (so that a mistyped subcommand still
// gets "unknown command").
func helperInvocation(argv []string) ([]string, bool) {
	if len(argv) == 0 {
		return nil, false
	}
	base := filepath.Base(argv[0])
	for _, n := range helperNames {
		if base == n {
			return argv[1:], true
		}
	}
	if len(argv) < 3 || strings.HasPrefix(argv[1], "-") {
		return nil, false
	}
	switch argv[1] {
	case "mount", "unmount", "umount", "version", "help":
		return nil, false
	}
	if st, err := os.Stat(argv[2]); err != nil || !st.IsDir() {
		return nil, false
	}
	return argv[1:], true
}

// helperCall is a parsed helper command line.
type helperCall struct {
	source, target string
	options        []string // the -o lists, in order
	sloppy         bool     // -s: drop options cosmount does not know
	fake           bool     // -f: check everything, mount nothing
	verbose        bool     // -v
}

// parseHelperArgs reads mount(8)'s helper protocol. -n (do not write
// /etc/mtab) needs nothing: the kernel's mount table is the only one.
func parseHelperArgs(args []string) (*helperCall, error) {
	c := &helperCall{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, error) {
			if len(a) > 2 {
				return strings.TrimPrefix(a[2:], "="), nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case !strings.HasPrefix(a, "-") || a == "-":
			pos = append(pos, a)
		case strings.HasPrefix(a, "-o"):
			v, err := value()
			if err != nil {
				return nil, err
			}
			c.options = append(c.options, v)
		case strings.HasPrefix(a, "-t"):
			if _, err := value(); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-N"):
			return nil, errors.New("-N: mounting in another mount namespace is not supported; run mount inside it (nsenter)")
		case a == "-h" || a == "--help":
			return nil, errHelperUsage
		default:
			// Combined short flags, as mount(8) may pass them: -sfnv.
			for _, r := range a[1:] {
				switch r {
				case 's':
					c.sloppy = true
				case 'f':
					c.fake = true
				case 'n':
				case 'v':
					c.verbose = true
				default:
					return nil, fmt.Errorf("unknown option %s (a mount helper takes -s -f -n -v -o -t)", a)
				}
			}
		}
	}
	if len(pos) != 2 {
		return nil, errHelperUsage
	}
	c.source, c.target = pos[0], pos[1]
	return c, nil
}

var errHelperUsage = errors.New("usage: mount.fuse.cosmount BUCKET[:/PREFIX] MOUNTPOINT -o endpoint=URL,... (see cosmount mount -h)")

// mountArgs is the `cosmount mount` command line that does what the helper
// was asked.
func (c *helperCall) mountArgs() []string {
	var args []string
	if c.verbose {
		args = append(args, "--v=2")
	}
	opts := c.options
	if c.sloppy {
		opts = dropUnknownOptions(opts)
	}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	return append(args, c.source, c.target)
}

// dropUnknownOptions leaves out the items that are neither mount options
// nor command options (mount -s: "tolerate sloppy mount options"), telling
// stderr which.
func dropUnknownOptions(lists []string) []string {
	var out []string
	for _, list := range lists {
		var keep []string
		for _, item := range strings.Split(list, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			rest, cmd := volume.SplitCommandOptions(item)
			if len(cmd) == 0 {
				o := volume.DefaultOptions()
				var oe *volume.OptionError
				if err := o.Apply(rest); errors.As(err, &oe) && oe.Unknown {
					// Its name only: the value may be anything, a secret too.
					fmt.Fprintf(os.Stderr, "cosmount: ignoring unknown mount option %q (-s)\n", oe.Option)
					continue
				}
			}
			keep = append(keep, item)
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, ","))
		}
	}
	return out
}

// runHelper mounts as mount(8) asked. Its errors carry mount(8)'s exit
// codes: 1 for a wrong command line, 32 for a mount that failed.
func runHelper(args []string) error {
	if wantsVersion(args) {
		printVersion()
		return nil
	}
	c, err := parseHelperArgs(args)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	// mount(8) starts helpers with an environment of its own, where PATH
	// may be missing; the mount needs fusermount3.
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPATH)
	}
	margs := c.mountArgs()
	if c.fake {
		// Everything but the mount: the options must parse and name
		// usable credentials.
		f, pos, err := parseMountFlags(margs)
		if err == nil && len(pos) != 2 {
			err = errHelperUsage
		}
		if err == nil {
			_, err = resolveAuth(f)
		}
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		return nil
	}
	if err := runMount(margs); err != nil {
		return &exitError{code: exitMountFails, err: err}
	}
	return nil
}

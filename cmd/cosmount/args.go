package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cosmount/cosmount/pkg/version"
	"github.com/cosmount/cosmount/pkg/volume"
)

// parseInterspersed parses args with fs, accepting flags before, between
// and after the positional arguments (`cosmount mount BUCKET /mnt -o
// uid=1000`, as s3fs and mount-s3 users type it). It returns the positional
// arguments in order and the flag arguments as given, so that a command line
// can be written again in the canonical order (flags first). "--" ends the
// flags; "-" alone is a positional argument. "-oLIST" is read as "-o LIST",
// as mount(8) and s3fs accept it.
func parseInterspersed(fs *flag.FlagSet, args []string) (pos, flagArgs []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(pos, args[i+1:]...), flagArgs, nil
		case a == "-" || !strings.HasPrefix(a, "-"):
			pos = append(pos, a)
			continue
		case strings.HasPrefix(a, "-o") && len(a) > 2 && a[2] != '=' && fs.Lookup(a[1:]) == nil:
			a = "-o=" + a[2:]
		}
		chunk := []string{a}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if fl := fs.Lookup(name); fl != nil && !hasValue && !isBoolFlag(fl) && i+1 < len(args) {
			i++
			chunk = append(chunk, args[i])
		}
		// A flag that takes a value but ends the line fails here ("flag
		// needs an argument"), as does an unknown one.
		if err := fs.Parse(chunk); err != nil {
			return nil, nil, err
		}
		flagArgs = append(flagArgs, chunk...)
	}
	return pos, flagArgs, nil
}

// canonicalArgs writes a command line again with its flags first and its
// positional arguments last, behind "--" when one of them looks like a flag.
func canonicalArgs(flagArgs, pos []string) []string {
	out := append([]string(nil), flagArgs...)
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	return append(out, pos...)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// applyCommandOptions takes the items of the -o lists that spell flags of
// fs (volume.ScopeCommand: endpoint=, trusted_profile_id=, log_file=,
// foreground, ...) and sets those flags, so that mount(8) and fstab, which
// pass everything in -o, can say anything the command line can. It returns
// the mount options that are left. A flag given both as a flag and in -o
// with different values is an error, not a silent choice.
func applyCommandOptions(fs *flag.FlagSet, lists []string) (rest []string, ignored []string, err error) {
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	fromOptions := map[string]string{}
	for _, list := range lists {
		opts, cmd := volume.SplitCommandOptions(list)
		if opts != "" {
			rest = append(rest, opts)
		}
		for _, c := range cmd {
			if c.Ignored {
				ignored = append(ignored, c.Name)
				continue
			}
			fl := fs.Lookup(c.Name)
			if fl == nil {
				return nil, nil, fmt.Errorf("-o %s: this command has no --%s", c.Name, c.Name)
			}
			value := c.Value
			if !c.HasValue {
				if !isBoolFlag(fl) {
					return nil, nil, fmt.Errorf("-o %s needs a value (%s=...)", optionSpelling(c.Name), optionSpelling(c.Name))
				}
				value = "true"
			}
			if prev, dup := fromOptions[c.Name]; dup && prev != value {
				return nil, nil, fmt.Errorf("-o %s is given twice with different values", optionSpelling(c.Name))
			}
			if explicit[c.Name] && fl.Value.String() != value {
				return nil, nil, fmt.Errorf("--%s and -o %s= give different values; give one", c.Name, optionSpelling(c.Name))
			}
			if err := fs.Set(c.Name, value); err != nil {
				return nil, nil, fmt.Errorf("-o %s: %w", optionSpelling(c.Name), err)
			}
			fromOptions[c.Name] = value
		}
	}
	return rest, ignored, nil
}

// optionSpelling is a flag's name as an -o item is usually written.
func optionSpelling(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// wantsVersion reports whether a command line asks for the version
// (--version or -version before any "--"), which every subcommand answers.
func wantsVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version":
			return true
		}
	}
	return false
}

// printVersion is the answer to --version and `cosmount version`.
func printVersion() { fmt.Println(version.UserAgent()) }

// parseUnmountArgs reads `cosmount unmount [-h] MOUNTPOINT`, the mountpoint
// anywhere among the flags.
func parseUnmountArgs(args []string) (string, error) {
	fs := flag.NewFlagSet("cosmount unmount", flag.ContinueOnError)
	fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cosmount unmount MOUNTPOINT\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pos, _, err := parseInterspersed(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", errors.New("usage: cosmount unmount MOUNTPOINT")
	}
	return pos[0], nil
}

// exitStatus turns the error of a subcommand into the process's exit code
// and message, printed to stderr.
func exitStatus(cmd string, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errReported) {
		return 1
	}
	var ex *exitError
	if errors.As(err, &ex) {
		fmt.Fprintf(os.Stderr, "cosmount %s: %v\n", cmd, ex.err)
		return ex.code
	}
	fmt.Fprintf(os.Stderr, "cosmount %s: %v\n", cmd, err)
	return 1
}

// exitError carries an exit code other than 1, as mount(8) helpers use them.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// addUXFlags adds the flags users of s3fs and mount-s3 reach for: -d/--debug,
// --log-file and --version (-f is next to --foreground).
func addUXFlags(fs *flag.FlagSet, f *mountFlags) {
	fs.BoolVar(&f.debug, "debug", false, "log at debug verbosity (--v=4): every request's outcome, token refreshes, uploads")
	fs.BoolVar(&f.debug, "d", false, "short for --debug")
	fs.StringVar(&f.logFile, "log-file", "", "write the log to this file instead of stderr, rotated at "+volume.FormatSize(logFileMaxSize)+" (one older file is kept as FILE.1); a detached mount's log goes there once it runs in the background")
	fs.Bool("version", false, "print the version and exit")
}

// finishMountFlags applies what the flags imply once all are parsed: the
// flag spellings inside -o, --debug's verbosity and an absolute log path
// (a detached server outlives the directory it was started in).
func finishMountFlags(fs *flag.FlagSet, f *mountFlags) error {
	rest, ignored, err := applyCommandOptions(fs, f.options)
	if err != nil {
		return err
	}
	f.options, f.ignoredOptions = rest, ignored
	if f.debug {
		verbositySet := false
		fs.Visit(func(fl *flag.Flag) { verbositySet = verbositySet || fl.Name == "v" })
		if !verbositySet {
			if err := fs.Set("v", "4"); err != nil {
				return err
			}
		}
	}
	if f.logFile != "" && !filepath.IsAbs(f.logFile) {
		abs, err := filepath.Abs(f.logFile)
		if err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
		f.logFile = abs
	}
	return nil
}

func mountUsage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprint(out, `Usage: cosmount mount [flags] BUCKET[:/PREFIX] MOUNTPOINT [flags]

Flags and -o options may come before or after BUCKET and MOUNTPOINT. Every flag
also has an -o spelling with '_' for '-', which is how mount(8) and /etc/fstab
pass them:

  cosmount mount my-bucket:/team-a /mnt/team-a -o uid=1000,allow_other \
      --endpoint https://s3.us-south.cloud-object-storage.appdomain.cloud \
      --trusted-profile-id Profile-... --cr-token-file /var/run/secrets/tokens/vault-token
  mount -t fuse.cosmount my-bucket:/team-a /mnt/team-a \
      -o endpoint=https://s3.us-south.cloud-object-storage.appdomain.cloud,trusted_profile_id=Profile-...

With a trusted profile and no --cr-token-file, the first readable of IBM's SDK
default token files is used (`+strings.Join(defaultCRTokenFiles, ", ")+`).
An API key comes from --api-key-file or IBMCLOUD_API_KEY (or COSMOUNT_API_KEY).
mount(8)'s generic options (_netdev, nofail, noauto, defaults, x-systemd.*, ...)
are accepted and ignored.

Flags:
`)
	fs.PrintDefaults()
}

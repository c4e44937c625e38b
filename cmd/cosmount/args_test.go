package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/volume"
)

func TestParseInterspersed(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *bool, *[]string) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var opts []string
		fs.Var(optionList{&opts}, "o", "")
		return fs, fs.String("endpoint", "", ""), fs.Bool("foreground", false, ""), &opts
	}
	for _, tc := range []struct {
		args    []string
		pos     []string
		ep      string
		fg      bool
		opts    []string
		wantErr string
	}{
		{args: []string{"--endpoint", "e", "-o", "uid=1", "b", "/m"}, pos: []string{"b", "/m"}, ep: "e", opts: []string{"uid=1"}},
		{args: []string{"b", "/m", "-o", "uid=1", "--endpoint=e", "--foreground"}, pos: []string{"b", "/m"}, ep: "e", fg: true, opts: []string{"uid=1"}},
		{args: []string{"b", "-foreground", "/m", "-ouid=1,gid=2", "-o", "ro"}, pos: []string{"b", "/m"}, fg: true, opts: []string{"uid=1,gid=2", "ro"}},
		{args: []string{"-o", "uid=1", "--", "-b", "--endpoint"}, pos: []string{"-b", "--endpoint"}, opts: []string{"uid=1"}},
		{args: []string{"b", "-", "/m"}, pos: []string{"b", "-", "/m"}},
		{args: []string{"b", "/m", "-o"}, wantErr: "needs an argument"},
		{args: []string{"b", "/m", "--colour", "x"}, wantErr: "not defined: -colour"},
		{args: []string{"b", "/m", "-h"}, wantErr: flag.ErrHelp.Error()},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs, ep, fg, opts := newFS()
			pos, _, err := parseInterspersed(fs, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tc.pos) || *ep != tc.ep || *fg != tc.fg || !reflect.DeepEqual(*opts, tc.opts) {
				t.Errorf("pos %q endpoint %q foreground %v -o %q", pos, *ep, *fg, *opts)
			}
		})
	}
}

// TestMountFlagOrderDoesNotMatter: the same mount written with flags before
// the positionals, after them, and as -o options (mount(8)'s form) parses
// to the same flags; and how the node's mounter writes it (pkg/volume
// Spec.Args) still parses.
func TestMountFlagOrderDoesNotMatter(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	forms := [][]string{
		{"--endpoint", "https://cos", "--trusted-profile-id", "Profile-1", "--cr-token-file", token, "-f", "-o", "uid=1000,ro", "bkt:/p", "/mnt"},
		{"bkt:/p", "/mnt", "-o", "uid=1000,ro", "--foreground", "--endpoint=https://cos", "--cr-token-file", token, "--trusted-profile-id", "Profile-1"},
		{"bkt:/p", "/mnt", "-o", "endpoint=https://cos,trusted_profile_id=Profile-1,cr_token_file=" + token + ",foreground,uid=1000,ro"},
		{"-o", "uid=1000", "bkt:/p", "-o", "trusted-profile-id=Profile-1", "/mnt", "-o", "endpoint=https://cos,cr-token-file=" + token + ",ro,foreground,_netdev,nofail"},
	}
	type view struct {
		endpoint, profile, token string
		foreground               bool
		options                  string
		pos                      []string
	}
	var first view
	for i, args := range forms {
		f, pos, err := parseMountFlags(args)
		if err != nil {
			t.Fatalf("form %d %q: %v", i, args, err)
		}
		o, err := volume.ParseOptions(strings.Join(f.options, ","))
		if err != nil {
			t.Fatalf("form %d: options %q: %v", i, f.options, err)
		}
		v := view{f.endpoint, f.profileID, f.crTokenFile, f.foreground, o.Encode(), pos}
		if i == 0 {
			first = v
			if v.endpoint != "https://cos" || v.options != "uid=1000,ro" || !v.foreground || !slices.Equal(pos, []string{"bkt:/p", "/mnt"}) {
				t.Fatalf("form 0 parsed as %+v", v)
			}
			continue
		}
		if !reflect.DeepEqual(v, first) {
			t.Errorf("form %d parsed as %+v, form 0 as %+v", i, v, first)
		}
	}

	spec := volume.Spec{VolumeID: "v", Target: "/var/lib/kubelet/pods/p/mount", Bucket: "bkt", Prefix: "p", Endpoint: "https://cos",
		IAMEndpoint: "https://iam", Auth: volume.AuthTrustedProfile, Profile: volume.Profile{ID: "Profile-1"}}
	spec.Options = volume.DefaultOptions()
	spec.Options.UID = 7
	args := spec.Args(token, volume.Options{TempDir: "/tmp/x"}, "--control-socket", "/run/c.sock", "--volume-id", "v")
	f, pos, err := parseMountFlags(args[1:])
	if err != nil {
		t.Fatalf("the mounter's command line %q: %v", args, err)
	}
	if !f.foreground || f.controlSocket != "/run/c.sock" || f.volumeID != "v" || f.crTokenFile != token ||
		!slices.Equal(pos, []string{"bkt:/p", spec.Target}) || !slices.Equal(f.options, []string{"uid=7,temp_dir=/tmp/x"}) {
		t.Errorf("the mounter's command line parsed as %+v %q", f, pos)
	}
}

func TestMountFlagConflictsAndDebug(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--endpoint", "a", "-o", "endpoint=b", "b", "/m"}, "--endpoint and -o endpoint= give different values"},
		{[]string{"-o", "region=a", "-o", "region=b", "b", "/m"}, "-o region is given twice"},
		{[]string{"-o", "endpoint", "b", "/m"}, "-o endpoint needs a value"},
		{[]string{"-o", "foreground=maybe", "b", "/m"}, "-o foreground"},
	} {
		if _, _, err := parseMountFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	// The same value both ways is not a conflict.
	if _, _, err := parseMountFlags([]string{"--endpoint", "a", "-o", "endpoint=a", "b", "/m"}); err != nil {
		t.Error(err)
	}
	f, _, err := parseMountFlags([]string{"b", "/m", "-d", "--log-file", "rel.log"})
	if err != nil {
		t.Fatal(err)
	}
	if !f.debug || f.verbosity() != "4" || !filepath.IsAbs(f.logFile) {
		t.Errorf("-d: debug %v, verbosity %s, log file %s", f.debug, f.verbosity(), f.logFile)
	}
	// An explicit verbosity wins over --debug's.
	if f, _, err = parseMountFlags([]string{"b", "/m", "-o", "debug,v=6"}); err != nil || f.verbosity() != "6" {
		t.Errorf("-o debug,v=6: verbosity %v, %v", f.verbosity(), err)
	}
}

// TestEveryFlagHasAnOptionSpelling: what `cosmount mount` takes as a flag,
// mount(8) and fstab can pass as -o NAME=VALUE, and the -o spellings name
// flags that exist.
func TestEveryFlagHasAnOptionSpelling(t *testing.T) {
	f, _, err := parseMountFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	spelled := map[string]bool{}
	for _, n := range volume.CommandFlagNames() {
		spelled[n] = true
		if f.flags.Lookup(n) == nil {
			t.Errorf("-o %s names no flag of cosmount mount", n)
		}
	}
	// -o itself, the one-letter aliases of spelled flags and --version are
	// not mount options.
	notOptions := map[string]bool{"o": true, "f": true, "d": true, "version": true}
	f.flags.VisitAll(func(fl *flag.Flag) {
		if !spelled[fl.Name] && !notOptions[fl.Name] {
			t.Errorf("flag --%s has no -o spelling: add it to pkg/volume's commandFlags", fl.Name)
		}
	})
}

func TestHelperInvocation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		argv []string
		want []string
		ok   bool
	}{
		{[]string{"/sbin/mount.fuse.cosmount", "b:/p", dir, "-o", "rw"}, []string{"b:/p", dir, "-o", "rw"}, true},
		{[]string{"mount.cosmount", "b", dir}, []string{"b", dir}, true},
		// mount.fuse3 runs "cosmount SOURCE DIR -o OPTIONS".
		{[]string{"/usr/local/bin/cosmount", "b", dir, "-o", "rw,dev,suid"}, []string{"b", dir, "-o", "rw,dev,suid"}, true},
		{[]string{"cosmount", "mount", dir, "x"}, nil, false},
		{[]string{"cosmount", "b", filepath.Join(dir, "missing")}, nil, false},
		{[]string{"cosmount", "--version"}, nil, false},
		{[]string{"cosmount", "frobnicate"}, nil, false},
	} {
		got, ok := helperInvocation(tc.argv)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("helperInvocation(%q) = %q, %v", tc.argv, got, ok)
		}
	}
}

func TestParseHelperArgs(t *testing.T) {
	c, err := parseHelperArgs([]string{"b:/p", "/mnt", "-sfnv", "-o", "rw,endpoint=https://cos,_netdev,colour=blue", "-t", "fuse.cosmount"})
	if err != nil {
		t.Fatal(err)
	}
	if c.source != "b:/p" || c.target != "/mnt" || !c.sloppy || !c.fake || !c.verbose {
		t.Errorf("parsed %+v", c)
	}
	if got := c.mountArgs(); !slices.Equal(got, []string{"--v=2", "-o", "rw,endpoint=https://cos,_netdev", "b:/p", "/mnt"}) {
		t.Errorf("mount args %q (sloppy drops only the unknown option)", got)
	}
	c, err = parseHelperArgs([]string{"b", "/mnt", "-orw,uid=1"})
	if err != nil || c.sloppy || !slices.Equal(c.mountArgs(), []string{"-o", "rw,uid=1", "b", "/mnt"}) {
		t.Errorf("-oLIST: %+v %v", c, err)
	}
	for args, want := range map[string]string{
		"b /mnt -N 4242": "namespace",
		"b":              "usage",
		"b /mnt -x":      "unknown option -x",
		"b /mnt -o":      "needs a value",
	} {
		if _, err := parseHelperArgs(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	r, err := openRotatingFile(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 29) + "\n") // 30 bytes
	for i := 0; i < 10; i++ {
		if n, err := r.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	// 10 lines of 30 bytes in files of at most 100: 3 per file, whole lines.
	if len(cur) != 30 || len(old) != 90 {
		t.Errorf("%s holds %d bytes, .1 %d; want 30 and 90", path, len(cur), len(old))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v, %v", st.Mode(), err)
	}
	if _, err := r.Write(line); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	// Reopening appends and counts what is there.
	r, err = openRotatingFile(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.size != 30 {
		t.Errorf("reopened size %d", r.size)
	}
}

func TestIBMEnvironment(t *testing.T) {
	dir := t.TempDir()
	second := filepath.Join(dir, "sa-token")
	if err := os.WriteFile(second, []byte("jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(dir, "vault-token"), second}
	if got := defaultCRTokenFile(files); got != second {
		t.Errorf("default token file %q, want the first readable %q", got, second)
	}
	if got := defaultCRTokenFile(files[:1]); got != "" {
		t.Errorf("default token file %q with none readable", got)
	}

	t.Setenv(envAPIKey, "")
	t.Setenv(envIBMCloudAPIKey, " key-from-ibmcloud \n")
	if k, v := apiKeyFromEnv(); k != "key-from-ibmcloud" || v != envIBMCloudAPIKey {
		t.Errorf("apiKeyFromEnv = %q from %s", k, v)
	}
	t.Setenv(envAPIKey, "key-from-cosmount")
	if k, v := apiKeyFromEnv(); k != "key-from-cosmount" || v != envAPIKey {
		t.Errorf("apiKeyFromEnv = %q from %s; COSMOUNT_API_KEY wins", k, v)
	}
	f, _, err := parseMountFlags([]string{"b", "/m", "--endpoint", "https://cos"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envAPIKey, "")
	a, err := resolveAuth(f)
	if err != nil || a.apiKey != "key-from-ibmcloud" || a.method() != "API key" {
		t.Errorf("resolveAuth with only IBMCLOUD_API_KEY: %+v %v", a, err)
	}
	f, _, err = parseMountFlags([]string{"b", "/m", "--trusted-profile-id", "Profile-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envIBMCloudAPIKey, "")
	// Default token files that do not exist, also in a pod that has IBM's.
	saved := defaultCRTokenFiles
	defaultCRTokenFiles = []string{filepath.Join(t.TempDir(), "vault-token")}
	t.Cleanup(func() { defaultCRTokenFiles = saved })
	if _, err := resolveAuth(f); err == nil || !strings.Contains(err.Error(), "--cr-token-file") {
		t.Errorf("a trusted profile without any token file: %v", err)
	}
}

func TestCanonicalArgs(t *testing.T) {
	f, pos, err := parseMountFlags([]string{"b", "/m", "-o", "uid=1", "--endpoint", "e", "-f"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-o", "uid=1", "--endpoint", "e", "-f", "b", "/m"}; !slices.Equal(f.canonical, want) || len(pos) != 2 {
		t.Errorf("canonical %q, want %q", f.canonical, want)
	}
	if got := canonicalArgs([]string{"-f"}, []string{"b", "-odd-dir"}); !slices.Equal(got, []string{"-f", "--", "b", "-odd-dir"}) {
		t.Errorf("canonical with a dash positional: %q", got)
	}
}

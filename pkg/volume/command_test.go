package volume

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSplitCommandOptions(t *testing.T) {
	opts, cmd := SplitCommandOptions("rw,endpoint=https://s3.example,trusted_profile_id=Profile-1, uid=1000 ,_netdev,nofail," +
		"x-systemd.automount,allow_other,foreground,log-file=/var/log/c.log,part_size=16MiB,,cr_token_file=/t")
	if opts != "rw,uid=1000,allow_other,part_size=16MiB" {
		t.Errorf("mount options %q", opts)
	}
	want := []CommandOption{
		{Name: "endpoint", Value: "https://s3.example", HasValue: true},
		{Name: "trusted-profile-id", Value: "Profile-1", HasValue: true},
		{Name: "_netdev", Ignored: true},
		{Name: "nofail", Ignored: true},
		{Name: "x-systemd.automount", Ignored: true},
		{Name: "foreground"},
		{Name: "log-file", Value: "/var/log/c.log", HasValue: true},
		{Name: "cr-token-file", Value: "/t", HasValue: true},
	}
	if !reflect.DeepEqual(cmd, want) {
		t.Errorf("command options\n got %+v\nwant %+v", cmd, want)
	}
	if _, err := ParseOptions(opts); err != nil {
		t.Errorf("the mount options left over do not parse: %v", err)
	}
	// What is neither stays for the grammar to refuse by name.
	opts, cmd = SplitCommandOptions("noexec,colour=blue")
	if opts != "noexec,colour=blue" || len(cmd) != 0 {
		t.Errorf("unknown options: %q %+v", opts, cmd)
	}
}

// TestVolumesCannotSetCommandOptions: what a Kubernetes volume writes in its
// mountOptions goes through Apply with ScopeVolume (the node plugin, and
// the server's Spec), which refuses every command option: a volume cannot
// name a credential file, an endpoint or a log file on the node.
func TestVolumesCannotSetCommandOptions(t *testing.T) {
	var names []string
	for _, f := range CommandFlagNames() {
		names = append(names, f, strings.ReplaceAll(f, "-", "_"))
	}
	names = append(names, "_netdev", "nofail", "x-systemd.requires")
	for _, name := range names {
		for _, item := range []string{name, name + "=/etc/shadow"} {
			o := DefaultOptions()
			err := o.Apply(item, ScopeVolume)
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Unknown || !strings.Contains(err.Error(), "cosmount command") {
				t.Errorf("Apply(%q, ScopeVolume) = %v, want a refusal that names the command", item, err)
			}
			if o != DefaultOptions() {
				t.Errorf("Apply(%q) changed the options: %+v", item, o)
			}
			var s Spec
			if err := s.UnmarshalJSON([]byte(`{"options":"` + item + `"}`)); err == nil {
				t.Errorf("a Spec from the mounter API accepted %q", item)
			}
		}
	}
}

func TestCommandFlagSpellingsAreNotMountOptions(t *testing.T) {
	for _, f := range CommandFlagNames() {
		if _, ok := lookupOption(f); ok {
			t.Errorf("%s is both a flag spelling and a mount option", f)
		}
		if strings.Contains(f, "_") {
			t.Errorf("flag %s is spelled with '_'", f)
		}
	}
	if ScopeCommand.String() != "command" {
		t.Errorf("ScopeCommand = %s", ScopeCommand)
	}
}

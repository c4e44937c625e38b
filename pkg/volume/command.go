package volume

import (
	"strings"
)

// CommandOption is one item of an -o list that SplitCommandOptions took out:
// the spelling of a flag of `cosmount mount`, or a generic mount(8) option.
type CommandOption struct {
	// Name is the flag's name as the command line spells it
	// (trusted-profile-id for trusted_profile_id), or the mount(8) option as
	// given for an ignored one.
	Name string
	// Value is what followed '='; HasValue tells "name=" from "name".
	Value    string
	HasValue bool
	// Ignored options are mount(8)'s generic ones: accepted so that fstab
	// lines written for other filesystems work, with no effect on cosmount.
	Ignored bool
}

// commandFlags are the flags of `cosmount mount` that an -o list may spell,
// with '_' for '-' (endpoint, trusted_profile_id, ...). A flag that carries
// a secret would not be listed: there is none, secrets come only from files
// and the environment. The list is checked against the command's flag set
// by cmd/cosmount's tests, so that every flag has an -o spelling.
var commandFlags = []string{
	"endpoint", "region", "iam-endpoint", "virtual-host-style",
	"trusted-profile-id", "trusted-profile-name", "trusted-profile-crn",
	"cr-token-file", "api-key-file", "hmac-credentials-file",
	"foreground", "debug", "log-file", "v", "vmodule",
	"start-timeout", "metrics-address", "control-socket", "volume-id", "upload-journal",
}

// ignoredMountOptions are generic mount(8) options that mean nothing to a
// FUSE server started by mount(8) (who may mount, when, in which order) or
// that a cosmount mount always has (nosuid, nodev: FUSE mounts get them
// from fusermount3): they are accepted and ignored, as s3fs and mount-s3
// do. _netdev tells systemd to mount after the network is up and nofail not
// to fail the boot; both act before cosmount is started. Options that ask
// for something cosmount cannot do (noexec, sync, ...) are not here: they
// are refused rather than silently not honoured.
var ignoredMountOptions = []string{
	"_netdev", "nofail", "auto", "noauto", "defaults", "user", "nouser", "users", "owner", "group",
	"dev", "nodev", "suid", "nosuid", "exec", "async",
	"atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
	"diratime", "nodiratime", "lazytime", "nolazytime", "loud",
}

// isIgnoredMountOption also accepts the option families mount(8) and
// systemd reserve for userspace: x-* (x-systemd.automount, ...) and
// comment=.
func isIgnoredMountOption(name string) bool {
	if strings.HasPrefix(name, "x-") || name == "comment" {
		return true
	}
	for _, n := range ignoredMountOptions {
		if n == name {
			return true
		}
	}
	return false
}

// commandFlag returns the flag an option name spells, if any.
func commandFlag(name string) (string, bool) {
	flag := strings.ReplaceAll(name, "_", "-")
	for _, f := range commandFlags {
		if f == flag {
			return f, true
		}
	}
	return "", false
}

// CommandFlagNames lists the flags of `cosmount mount` that have an -o
// spelling (with '-'; the -o form may use '_').
func CommandFlagNames() []string { return append([]string(nil), commandFlags...) }

// isCommandOption reports whether an -o item's name is of ScopeCommand.
func isCommandOption(name string) bool {
	if _, ok := commandFlag(name); ok {
		return true
	}
	return isIgnoredMountOption(name)
}

// SplitCommandOptions separates an -o list into the command's options (see
// ScopeCommand), in their order, and the mount options, which it returns
// joined by commas for Apply or ParseOptions. A name that is both a mount
// option and a flag spelling is a mount option; the grammar keeps them
// apart. Blank items are dropped.
func SplitCommandOptions(list string) (options string, cmd []CommandOption) {
	var rest []string
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, hasVal := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if _, isVolume := lookupOption(name); isVolume {
			rest = append(rest, item)
			continue
		}
		if flag, ok := commandFlag(name); ok {
			cmd = append(cmd, CommandOption{Name: flag, Value: val, HasValue: hasVal})
			continue
		}
		if isIgnoredMountOption(name) {
			cmd = append(cmd, CommandOption{Name: name, Value: val, HasValue: hasVal, Ignored: true})
			continue
		}
		rest = append(rest, item)
	}
	return strings.Join(rest, ","), cmd
}

// Command cosmount mounts an IBM Cloud Object Storage bucket (or a prefix of
// one) as a directory with FUSE. It is both the standalone `cosmount mount`
// command and the per-volume server process the CSI node plugin starts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

const usage = `cosmount mounts an IBM Cloud Object Storage bucket as a directory.

Usage:
  cosmount mount [flags] BUCKET[:/PREFIX] MOUNTPOINT [flags]
  cosmount abort-uploads [mount's endpoint and auth flags] --upload-journal FILE BUCKET[:/PREFIX]
  cosmount unmount MOUNTPOINT
  cosmount version
  mount -t fuse.cosmount BUCKET[:/PREFIX] MOUNTPOINT -o endpoint=URL,...   (see "cosmount mount -h")

Run "cosmount mount -h" for the mount flags; every flag can also be given as
an -o option (-o endpoint=URL,trusted_profile_id=ID). Secrets are read only
from files or the environment (IBMCLOUD_API_KEY or COSMOUNT_API_KEY,
COSMOUNT_HMAC_ACCESS_KEY_ID, COSMOUNT_HMAC_SECRET_ACCESS_KEY), never from
the command line. --version works with every command.
`

func main() {
	// As mount(8)'s helper (/sbin/mount.fuse.cosmount, or run by
	// mount.fuse3 as "cosmount SOURCE TARGET -o ..."): see helper.go.
	if helperArgs, ok := helperInvocation(os.Args); ok {
		err := runHelper(helperArgs)
		klog.Flush()
		os.Exit(exitStatus("mount", err))
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if wantsVersion(os.Args[1:]) {
		printVersion()
		return
	}
	var err error
	switch os.Args[1] {
	case "mount":
		err = runMount(os.Args[2:])
	case "abort-uploads":
		err = runAbortUploads(os.Args[2:])
	case "unmount", "umount":
		err = runUnmount(os.Args[2:])
	case "version":
		printVersion()
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "cosmount: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	klog.Flush()
	if code := exitStatus(os.Args[1], err); code != 0 {
		os.Exit(code)
	}
}

// mountFlags are the flags of `cosmount mount`.
type mountFlags struct {
	endpoint, region, iamEndpoint      string
	profileID, profileName, profileCRN string
	crTokenFile, apiKeyFile, hmacFile  string
	virtualHost                        bool
	foreground                         bool
	debug                              bool
	logFile                            string
	ignoredOptions                     []string
	flags                              *flag.FlagSet // as parsed, for tests
	canonical                          []string      // the arguments, flags first
	options                            []string
	startTimeout                       time.Duration
	metricsAddress                     string
	controlSocket                      string
	volumeID                           string
	verbosity                          func() string
	uploadJournal                      string
}

type optionList struct{ list *[]string }

func (o optionList) String() string {
	if o.list == nil {
		return ""
	}
	return strings.Join(*o.list, ",")
}
func (o optionList) Set(s string) error { *o.list = append(*o.list, s); return nil }

func parseMountFlags(args []string) (*mountFlags, []string, error) {
	f := &mountFlags{}
	fs := flag.NewFlagSet("cosmount mount", flag.ContinueOnError)
	fs.StringVar(&f.endpoint, "endpoint", os.Getenv("COSMOUNT_ENDPOINT"), "COS endpoint URL, e.g. https://s3.us-south.cloud-object-storage.appdomain.cloud (env COSMOUNT_ENDPOINT)")
	fs.StringVar(&f.region, "region", "us-south", "region the endpoint is in (signing region for HMAC)")
	fs.StringVar(&f.iamEndpoint, "iam-endpoint", "https://iam.cloud.ibm.com", "IBM Cloud IAM base URL (for example https://private.iam.cloud.ibm.com)")
	fs.StringVar(&f.profileID, "trusted-profile-id", "", "trusted profile ID to exchange the compute-resource token for (with --cr-token-file)")
	fs.StringVar(&f.profileName, "trusted-profile-name", "", "trusted profile name (with --cr-token-file)")
	fs.StringVar(&f.profileCRN, "trusted-profile-crn", "", "trusted profile CRN (with --cr-token-file)")
	fs.StringVar(&f.crTokenFile, "cr-token-file", "", "file holding the compute-resource (service-account) token; re-read at every exchange")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file holding an IBM Cloud API key (or set COSMOUNT_API_KEY)")
	fs.StringVar(&f.hmacFile, "hmac-credentials-file", "", "file holding ACCESS_KEY_ID:SECRET_ACCESS_KEY for HMAC (SigV4) auth")
	fs.BoolVar(&f.virtualHost, "virtual-host-style", false, "address buckets as <bucket>.<endpoint host> instead of in the path")
	fs.BoolVar(&f.foreground, "foreground", false, "stay in the foreground (the CSI node plugin uses this); otherwise detach once the mount is live")
	fs.BoolVar(&f.foreground, "f", false, "short for --foreground")
	fs.Var(optionList{&f.options}, "o", "mount options, comma separated: uid=,gid=,file_mode=,dir_mode=,allow_other,ro,prefix=,attr_ttl=,entry_ttl=,negative_ttl=,part_size=,upload_concurrency=,memory_limit=,cache_memory=,cache_size=,cache_dir=,... (repeatable)")
	fs.DurationVar(&f.startTimeout, "start-timeout", 60*time.Second, "how long to wait for the mount to become live")
	fs.StringVar(&f.metricsAddress, "metrics-address", "", "serve Prometheus metrics of this mount on this address (e.g. 127.0.0.1:9811); empty: off")
	fs.StringVar(&f.volumeID, "volume-id", "", "name this mount's volume in every log line (volumeID=...) and rate-limit the log; the node's mounter sets it")
	fs.StringVar(&f.controlSocket, "control-socket", "", "serve this mount's metrics, status and flush requests on this unix socket (created 0600, removed on exit); the node's mounter uses it")
	fs.StringVar(&f.uploadJournal, "upload-journal", "", "file that lists the multipart uploads this server has started and not finished; at start the uploads an earlier server left there are aborted (see cosmount abort-uploads)")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	klogFlags.VisitAll(func(kf *flag.Flag) {
		if kf.Name == "v" || kf.Name == "vmodule" {
			fs.Var(kf.Value, kf.Name, kf.Usage)
		}
	})
	addUXFlags(fs, f)
	fs.Usage = func() { mountUsage(fs) }
	pos, flagArgs, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, err
	}
	f.canonical = canonicalArgs(flagArgs, pos)
	if err := finishMountFlags(fs, f); err != nil {
		return nil, nil, err
	}
	f.verbosity = func() string { return klogFlags.Lookup("v").Value.String() }
	f.flags = fs
	return f, pos, nil
}

func runUnmount(args []string) error {
	mountpoint, err := parseUnmountArgs(args)
	if err != nil {
		return err
	}
	return unmount(context.Background(), mountpoint)
}

// Command cosmount-emulator runs a local stand-in for IBM Cloud IAM and IBM
// Cloud Object Storage, for development, the demo and tests, and mints the
// Kubernetes service-account tokens that its IAM accepts. Keys and secrets
// come from files, never from the command line.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cosmount/cosmount/pkg/version"
)

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run IAM and COS on two loopback listeners", runServe},
		{"mint-token", "mint a pod service-account token the emulator's IAM accepts", runMintToken},
		{"gen-issuer-key", "generate a service-account issuer key (key.pem + jwks.json)", runGenIssuerKey},
		{"print-config", "print the embedded default configuration", runPrintConfig},
		{"version", "print the version", func(_ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, version.Version)
			return nil
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `cosmount-emulator: a local IBM Cloud IAM + Cloud Object Storage endpoint.

Usage: cosmount-emulator COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-15s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'cosmount-emulator COMMAND --help' for the flags of a command.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case err == flag.ErrHelp:
			return 0
		case isUsageError(err):
			if msg := err.Error(); msg != "" {
				fmt.Fprintf(stderr, "cosmount-emulator %s: %s\n", c.name, msg)
			}
			return 2
		default:
			fmt.Fprintf(stderr, "cosmount-emulator %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "cosmount-emulator: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func isUsageError(err error) bool {
	_, ok := err.(usageError)
	return ok
}

// newFlagSet returns a flag set whose --help prints doc, then the flags.
func newFlagSet(name, doc string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cosmount-emulator %s [flags]\n\n%s\nFlags:\n", name, doc)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		// The flag package has already printed the problem and the usage.
		return usageError{}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (this command takes only flags)", fs.Arg(0))
	}
	return nil
}

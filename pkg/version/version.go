// Package version holds the build's version string, set at link time by the
// Makefile, and the User-Agent every cosmount HTTP client sends.
package version

// Version is overridden with -ldflags "-X github.com/cosmount/cosmount/pkg/version.Version=...".
var Version = "dev"

// UserAgent is "cosmount/<version>".
func UserAgent() string { return "cosmount/" + Version }

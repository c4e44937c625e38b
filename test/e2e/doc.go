// Package e2e holds the end-to-end tests of the `cosmount` command: the real
// binary, built once per run, mounts the in-process emulator's bucket through
// FUSE as a child process the tests own by PID, and every effect on the
// filesystem is checked against the bucket through the S3 API and the
// emulator's audit log. The package has no non-test code.
package e2e

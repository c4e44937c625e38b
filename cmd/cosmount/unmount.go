package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// fusermountUnmount unmounts through fusermount3, for users who mounted
// without root.
func fusermountUnmount(ctx context.Context, mountpoint string) error {
	out, err := exec.CommandContext(ctx, "fusermount3", "-u", mountpoint).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u %s: %v: %s", mountpoint, err, strings.TrimSpace(string(out)))
	}
	return nil
}

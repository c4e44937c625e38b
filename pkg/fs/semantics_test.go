package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// docs/SEMANTICS.md: a directory rename moves key after key, not
// atomically. When a copy fails, the copies made so far are removed again:
// the directory stays under its old name and the rename can be repeated.
// When deleting the old keys fails after every copy succeeded, the error is
// reported and the keys are under both names; nothing is lost either way.
func TestDirectoryRenameIsNotAtomic(t *testing.T) {
	store := memstore.New()
	for i := 0; i < 20; i++ {
		putObject(t, store, fmt.Sprintf("old/f%02d", i), fmt.Sprint(i), nil)
	}
	_, mnt := mountT(t, store, testOptions())
	under := func(dir string) int {
		n := 0
		for _, k := range store.Keys() {
			if strings.HasPrefix(k, dir+"/") {
				n++
			}
		}
		return n
	}
	var copies atomic.Int32
	store.SetFault(func(op memstore.Op, key string) error {
		if op == memstore.OpCopy && copies.Add(1) > 10 {
			return fmt.Errorf("injected: %w", cos.ErrUnavailable)
		}
		return nil
	})
	err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "new"))
	wantErrno(t, "rename with failing copies", err, syscall.EIO)
	if o, n := under("old"), under("new"); o != 20 || n != 0 {
		t.Errorf("after a failed copy: %d keys under old, %d under new; want 20 and 0", o, n)
	}
	if _, err := os.Stat(filepath.Join(mnt, "old", "f03")); err != nil {
		t.Errorf("old/f03 after the failed rename: %v", err)
	}

	store.FailOp(memstore.OpDeleteMany, fmt.Errorf("injected: %w", cos.ErrUnavailable))
	err = os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "new"))
	wantErrno(t, "rename with failing deletes", err, syscall.EIO)
	if o, n := under("old"), under("new"); o != 20 || n != 20 {
		t.Errorf("after a failed delete: %d keys under old, %d under new; want 20 and 20", o, n)
	}
	if body, _ := object(t, store, "new/f07"); body != "7" {
		t.Errorf("new/f07 = %q", body)
	}
	store.SetFault(nil)
}

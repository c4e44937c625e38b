package cos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUploadJournal(t *testing.T) {
	in := `{"op":"start","bucket":"b","key":"a","id":"1"}
{"op":"start","bucket":"b","key":"with\nnewline","id":"2"}
not a record
{"op":"start","bucket":"b","key":"c","id":"3"}
{"op":"end","id":"1"}
{"op":"end","id":"unknown"}
{"op":"start","bucket":"","key":"no bucket","id":"4"}
{"op":"start","bucket":"b","key":"torn","i`
	got, n, err := ParseUploadJournal(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []PendingUpload{{"b", "with\nnewline", "2"}, {"b", "c", "3"}}
	if fmt.Sprint(got) != fmt.Sprint(want) || n != 6 {
		t.Errorf("got %q after %d records, want %q after 6", got, n, want)
	}
}

func TestUploadJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenUploadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenUploadJournal(path); !errors.Is(err, ErrJournalInUse) {
		t.Errorf("second open of a live journal: %v, want ErrJournalInUse", err)
	}
	j.Started("b", "k1", "u1")
	j.Started("b", "k2", "u2")
	j.Ended("u1")
	// Many uploads that end: the file is compacted, not grown forever.
	for i := 0; i < 3000; i++ {
		id := fmt.Sprintf("x%d", i)
		j.Started("b", "many", id)
		j.Ended(id)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() > 200<<10 || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal file: %v %v", fi, err)
	}
	j, err = OpenUploadJournal(path)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	defer j.Close()
	if p := j.Pending(); len(p) != 1 || p[0] != (PendingUpload{"b", "k2", "u2"}) {
		t.Errorf("pending after reopen: %+v", p)
	}
}

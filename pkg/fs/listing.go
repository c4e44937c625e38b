package fs

import (
	"context"
	"sort"
	"strings"
	"time"

	"bazil.org/fuse"

	"github.com/cosmount/cosmount/pkg/cos"
)

// ReadDirAll lists the directory (all pages) unless a fresh listing is
// cached. One listing also refreshes the attributes of every child, so that
// `ls -l` needs no HEAD per entry.
func (d *Dir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	now := d.fs.now()
	d.mu.Lock()
	if d.complete && now.Sub(d.listedAt) < d.fs.opts.EntryTTL {
		ents := d.direntsLocked()
		d.mu.Unlock()
		return d.withInodes(ents), nil
	}
	d.mu.Unlock()

	dirKey, err := d.key()
	if err != nil {
		return nil, err
	}
	listed, err := d.listAll(ctx, dirKey)
	if err != nil {
		return nil, d.fs.fail("readdir", dirKey, err)
	}
	// Files created here but not uploaded yet are not in the listing.
	d.fs.mu.Lock()
	var local []*File
	for _, c := range d.children {
		if f, ok := c.(*File); ok {
			local = append(local, f)
		}
	}
	d.fs.mu.Unlock()
	for _, f := range local {
		if f.isLocal() {
			name, _ := f.nameNow()
			if _, ok := listed[name]; !ok && name != "" {
				listed[name] = &entry{kind: kindFile, info: cos.ObjectInfo{Key: dirKey + name}, at: now}
			}
		}
	}
	for name, e := range listed {
		if c := d.child(name); c != nil && c.kind() == e.kind {
			c.refresh(e)
		}
	}
	d.mu.Lock()
	d.entries = listed
	d.negative = map[string]time.Time{}
	d.complete = true
	d.listedAt = now
	ents := d.direntsLocked()
	d.mu.Unlock()
	return d.withInodes(ents), nil
}

// listAll reads every page of the directory's listing.
func (d *Dir) listAll(ctx context.Context, dirKey string) (map[string]*entry, error) {
	now := d.fs.now()
	out := map[string]*entry{}
	o := cos.ListOptions{Prefix: dirKey, Delimiter: "/"}
	for {
		page, err := d.fs.store.List(ctx, o)
		if err != nil {
			return nil, err
		}
		for _, obj := range page.Objects {
			name := strings.TrimPrefix(obj.Key, dirKey)
			if checkName(name) != nil {
				continue // the marker itself, or a key no path can name
			}
			if prev, ok := out[name]; !ok || prev.kind != kindDir {
				out[name] = &entry{kind: kindFile, info: obj, at: now}
			}
		}
		for _, p := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(p, dirKey), "/")
			if checkName(name) != nil {
				continue
			}
			out[name] = &entry{kind: kindDir, at: now}
		}
		if page.NextContinuationToken == "" {
			return out, nil
		}
		o.ContinuationToken = page.NextContinuationToken
	}
}

func (d *Dir) direntsLocked() []fuse.Dirent {
	ents := make([]fuse.Dirent, 0, len(d.entries))
	for name, e := range d.entries {
		t := fuse.DT_File
		switch e.kind {
		case kindDir:
			t = fuse.DT_Dir
		case kindSymlink:
			t = fuse.DT_Link
		}
		ents = append(ents, fuse.Dirent{Name: name, Type: t})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return ents
}

// withInodes gives live children their real inode numbers; the rest get
// bazil's dynamic ones.
func (d *Dir) withInodes(ents []fuse.Dirent) []fuse.Dirent {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	for i := range ents {
		if c := d.children[ents[i].Name]; c != nil {
			ents[i].Inode = c.base().inode
		}
	}
	return ents
}

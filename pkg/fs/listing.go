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
	if d.complete && !d.namesOnly && now.Sub(d.listedAt) < d.fs.opts.EntryTTL {
		ents := d.direntsLocked()
		d.mu.Unlock()
		return d.withInodes(ents), nil
	}
	d.mu.Unlock()

	ctx, cancel := d.fs.detach(ctx, longOpTimeout)
	defer cancel()
	dirKey, err := d.key()
	if err != nil {
		return nil, err
	}
	listed, _, err := d.list(ctx, dirKey, 0, now)
	if err != nil {
		return nil, d.fs.fail("readdir", dirKey, err)
	}
	d.install(dirKey, listed, now, false)
	d.mu.Lock()
	ents := d.direntsLocked()
	d.mu.Unlock()
	return d.withInodes(ents), nil
}

// listForLookup lists the directory once (after a lookup probed a name):
// when it fits in lookupPages pages, the listing tells following lookups
// which names exist for EntryTTL, so each costs one request (lookupGet)
// instead of a probe's two, and which do not (a name created then costs
// Create's HEAD, see absenceKnown, instead of a probe). It reports whether
// a listing was installed (by this call or a concurrent one). A larger
// directory is remembered as such for EntryTTL: the names its first pages
// showed are known to exist, the others are probed one by one. Errors are
// left to the probe, which reports its own.
func (d *Dir) listForLookup(ctx context.Context) bool {
	if d.fs.opts.EntryTTL == 0 || d.fs.opts.NegativeTTL == 0 {
		return false
	}
	now := d.fs.now()
	d.mu.Lock()
	if now.Before(d.largeUntil) || (d.complete && now.Sub(d.listedAt) < d.fs.opts.EntryTTL) {
		d.mu.Unlock()
		return false
	}
	// A directory that readdir listed whole is listed whole again (with
	// the listing's attributes, as readdir does): an `ls -l` that outlasts
	// EntryTTL then costs a listing, not a lookup request per name.
	whole := d.complete && !d.namesOnly
	if ch := d.listing; ch != nil {
		d.mu.Unlock()
		select {
		case <-ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ch := make(chan struct{})
	d.listing = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.listing = nil
		d.mu.Unlock()
		close(ch)
	}()
	dirKey, err := d.key()
	if err != nil {
		return false
	}
	pages := lookupPages
	if whole {
		pages = 0
	}
	listed, complete, err := d.list(ctx, dirKey, pages, now)
	if err != nil {
		return false
	}
	if whole {
		d.install(dirKey, listed, now, false)
		return true
	}
	for _, e := range listed {
		e.nameOnly = true
	}
	if !complete {
		// The names the pages showed exist (a lookup of one costs a single
		// request); whether another name exists, only a probe can tell.
		d.mu.Lock()
		d.largeUntil = now.Add(d.fs.opts.EntryTTL)
		for name, e := range listed {
			if cur := d.entries[name]; cur != nil && cur.at.After(now) {
				continue // learned since the listing began
			}
			if exp, ok := d.negative[name]; ok && exp.Add(-d.fs.opts.NegativeTTL).After(now) {
				continue // removed since
			}
			d.entries[name] = e
		}
		d.mu.Unlock()
		return false
	}
	d.install(dirKey, listed, now, true)
	return true
}

// relist lists a directory again whose complete listing (readdir's, a
// lookup's, or mkdir's) has expired, instead of probing a name in it; it
// reports whether a complete listing is installed.
func (d *Dir) relist(ctx context.Context) bool {
	d.mu.Lock()
	was := d.complete
	d.mu.Unlock()
	return was && d.listForLookup(ctx)
}

// lookupPages is how many pages of a listing a lookup reads: a directory
// of up to 2,000 names (a thousand files and their directory's marker, for
// instance) is known whole after one lookup.
const lookupPages = 2

// list reads the directory's listing, at most maxPages pages (0: all), and
// stamps the entries with at; complete reports whether it read them all.
func (d *Dir) list(ctx context.Context, dirKey string, maxPages int, at time.Time) (map[string]*entry, bool, error) {
	out := map[string]*entry{}
	o := cos.ListOptions{Prefix: dirKey, Delimiter: "/"}
	for pages := 1; ; pages++ {
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		page, err := d.fs.store.List(pctx, o)
		cancel()
		if err != nil {
			return nil, false, err
		}
		for _, obj := range page.Objects {
			name := strings.TrimPrefix(obj.Key, dirKey)
			if checkName(name) != nil {
				continue // the marker itself, or a key no path can name
			}
			if prev, ok := out[name]; !ok || prev.kind != kindDir {
				out[name] = &entry{kind: kindFile, info: obj, at: at}
			}
		}
		for _, p := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(p, dirKey), "/")
			if checkName(name) != nil {
				continue
			}
			out[name] = &entry{kind: kindDir, at: at}
		}
		if page.NextContinuationToken == "" {
			return out, true, nil
		}
		if pages == maxPages {
			return out, false, nil
		}
		o.ContinuationToken = page.NextContinuationToken
	}
}

// install makes listed, a complete listing taken at start, the directory's
// entries. Files created here but not uploaded yet are added (the store
// does not know them), and what this mount learned or changed after start
// (an upload, an unlink) wins over the listing, which may predate it.
func (d *Dir) install(dirKey string, listed map[string]*entry, start time.Time, namesOnly bool) {
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
				listed[name] = &entry{kind: kindFile, info: cos.ObjectInfo{Key: dirKey + name}, at: start}
			}
		}
	}
	d.mu.Lock()
	for name, e := range d.entries {
		if e.at.After(start) {
			listed[name] = e
		}
	}
	negative := map[string]time.Time{}
	if ttl := d.fs.opts.NegativeTTL; ttl > 0 {
		for name, exp := range d.negative {
			if exp.Add(-ttl).After(start) {
				negative[name] = exp
				delete(listed, name)
			}
		}
	}
	d.entries = listed
	d.negative = negative
	d.complete = true
	d.listedAt = start
	d.namesOnly = namesOnly
	d.madeHere = false
	d.mu.Unlock()
	if namesOnly {
		return
	}
	// Children take the listing's attributes, outside d.mu (a child Dir's
	// refresh takes its own mu).
	for name, e := range listed {
		if !e.at.Equal(start) {
			continue
		}
		if c := d.child(name); c != nil && c.kind() == e.kind {
			c.refresh(e)
		}
	}
}

// markEmpty records that the directory was just created by this mount: its
// listing is known (empty), so new names need no request.
func (d *Dir) markEmpty(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries = map[string]*entry{}
	d.negative = map[string]time.Time{}
	d.complete = true
	d.listedAt = now
	d.namesOnly = false
	d.madeHere = true
	d.largeUntil = time.Time{}
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

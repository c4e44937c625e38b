// Package fs is cosmount's FUSE filesystem (bazil.org/fuse): it presents an
// object-store bucket (or a prefix of it) as a directory tree. It owns the
// nodes, handles, attribute/entry/negative caches, write buffering and
// streaming multipart uploads, readahead, and the mapping of store errors to
// errnos (errno in errors.go is the only place that decides an errno).
//
// # Structure
//
// Nodes (*Dir, *File) are per entry and live as long as the kernel knows the
// entry: the same entry always yields the same node, so bazil hands the kernel
// one stable NodeID. A File node owns the file's content while it is being
// modified (memory buffer, temporary file or streaming multipart upload); a
// fileHandle is per open and owns only its readahead state.
//
// Keys: object key = Options.Prefix + relative path; directory keys end in
// "/". Directories are implicit (common prefixes) or explicit (zero-byte
// "dir/" markers). When an object "name" and a prefix "name/" both exist, the
// directory is shown and the object is hidden, as s3fs does.
//
// # Lock order
//
// Take locks only in this order, never backwards:
//
//	File.mu -> fileHandle.mu -> Dir.mu -> { FS.mu | File.attrMu }
//
// File.mu serialises a file's content changes and uploads and may be held
// across store I/O. fileHandle.mu guards readahead state. Dir.mu guards a
// directory's entry and negative caches. FS.mu (the namespace: parent/name
// links, Dir.children, the dirty set) and File.attrMu (a file's attributes)
// are leaves: nothing is acquired while holding either, and they are never
// held together. Dir.mu, FS.mu and attrMu are never held across store I/O.
//
// # Consistency and limits
//
// Directory rename moves every key below the directory with copy + delete;
// it is not atomic. A failed copy removes the copies made so far, so the
// directory stays under its old name and the rename can be repeated; a
// failed delete after every copy succeeded leaves keys under both names
// (the new directory is complete). The error is returned either way. A lookup that
// probes a name lists the directory once (one page, 1000 names): the
// listing then tells which names exist for EntryTTL (each is still HEADed
// once for its metadata) and which do not (for min(EntryTTL, NegativeTTL),
// as a readdir listing does); a directory larger than a page is probed name
// by name. Another client may write a name after a listing, so creating a
// name a listing said absent HEADs it first (not a name this mount HEADed
// or removed itself, nor one in a directory it made by mkdir less than
// EntryTTL ago): if the object exists, O_CREAT opens it (O_TRUNC empties
// it, O_APPEND appends to it) and O_EXCL fails with EEXIST. That HEAD does
// not see a directory "name/" made elsewhere meanwhile: the new object is
// then hidden by it (see above), not lost. The first flush of a file that
// its open created, while nothing was written to it, uploads nothing (see
// fileHandle.Flush), so a shell redirection costs one PUT. Operations are
// not canceled by signals (ctx.go); only a read waiting for data returns
// EINTR. A failed
// streaming multipart upload cannot be retried from the mount (its parts
// are gone); close() reports the error. Attributes from a listing carry no
// metadata (S3 listings do not), so after readdir, until the entry's HEAD
// is needed (after EntryTTL/AttrTTL) or its first read (a GET carries the
// metadata), its mode and owner come from the mount options (and the kernel
// checks permissions against those) and an s3fs symlink listed in a
// directory shows as a regular file. Opening such a file for writing HEADs
// it first, so the upload keeps its metadata.
//
// Unsupported operations fail clearly: link and mknod with EPERM, extended
// attributes with ENOTSUP, every modification of a read-only mount with EROFS.
// Poll answers ENOSYS once, so the kernel stops asking.
//
// Writes to a new file are buffered in memory (doubling, from the budget),
// stream as a multipart upload once the file reaches MultipartThreshold, and
// move to a temporary file when they leave a gap or the budget is short.
// Changing an existing object downloads it into a temporary file first
// (read-modify-write), except appending to an object of at least 5 MiB:
// that starts a multipart upload whose first parts are the object's bytes,
// copied server-side (UploadPartCopy, on the condition of the ETag this
// mount last saw: another writer's object is ESTALE), and the new data
// streams after them. fsync (and close) of a streaming upload completes it,
// so the object is durable with every byte written so far; the next write
// continues it that way. A file written sequentially with an fsync every
// N MiB thus crosses the network about once, whatever N; each fsync costs
// a CompleteMultipartUpload, and the next write a CreateMultipartUpload and
// one UploadPartCopy per 5 GiB of the object. An fsync of a new file still
// in memory saves it as a multipart upload once it has 5 MiB, so that the
// same holds below the multipart threshold; under 5 MiB (S3's smallest
// part) each fsync uploads the whole file. Nothing reaches the store before flush, fsync or
// release, and a failed upload stays dirty (retried by the next flush,
// fsync or FS.Flush) after close has returned the error.
//
// Tests: a process must not open files of its own mount with *os.File (Go
// registers regular files with epoll, whose FUSE poll request can leave the
// server without a thread to run on); the tests use plain syscalls.
package fs

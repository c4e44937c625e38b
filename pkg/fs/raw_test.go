package fs

import (
	"io"
	"os"
	"syscall"
)

// rawFile is a file opened with plain syscalls. Tests must not use *os.File
// on their own mount: Go registers regular files with epoll, epoll_ctl on a
// FUSE file sends a POLL request to this very process, and the runtime
// thread making that call keeps its P; with a few of them blocked the FUSE
// server goroutines cannot run and the process deadlocks. Plain read/write
// syscalls release their P and are safe.
type rawFile struct{ fd int }

func openRaw(path string, flags int, mode uint32) (*rawFile, error) {
	fd, err := syscall.Open(path, flags|syscall.O_CLOEXEC, mode)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &rawFile{fd: fd}, nil
}

func createRaw(path string) (*rawFile, error) {
	return openRaw(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_TRUNC, 0o644)
}

func (f *rawFile) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := syscall.Write(f.fd, b[done:])
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func (f *rawFile) WriteString(s string) (int, error) { return f.Write([]byte(s)) }

func (f *rawFile) WriteAt(b []byte, off int64) (int, error) {
	return syscall.Pwrite(f.fd, b, off)
}

func (f *rawFile) Read(b []byte) (int, error) {
	n, err := syscall.Read(f.fd, b)
	if err != nil {
		return 0, err
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (f *rawFile) ReadAt(b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		n, err := syscall.Pread(f.fd, b[done:], off+int64(done))
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return done, nil
}

func (f *rawFile) SeekTo(off int64) error {
	_, err := syscall.Seek(f.fd, off, io.SeekStart)
	return err
}

func (f *rawFile) Sync() error            { return syscall.Fsync(f.fd) }
func (f *rawFile) Truncate(n int64) error { return syscall.Ftruncate(f.fd, n) }
func (f *rawFile) Close() error           { return syscall.Close(f.fd) }
func (f *rawFile) Dup() (int, error)      { return syscall.Dup(f.fd) }

func readFile(path string) ([]byte, error) {
	f, err := openRaw(path, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func writeFile(path string, data []byte) error {
	f, err := createRaw(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

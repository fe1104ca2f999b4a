package cgi

// This file holds the spool between the web server's writes to our stdin
// and the app's reads of the body.
//
// Apache's mod_cgi and mod_cgid write the whole request body to a script
// before they read any of its output. An app that answers while it reads
// (an echo, a streamed upload) would fill stdout, stop reading stdin, and
// leave Apache blocked writing it: a deadlock that ends at Apache's Timeout.
// So stdin is read as fast as the server writes it, whatever the app does;
// what the app has not read yet waits in memory up to a limit and in an
// unlinked temporary file beyond it, so memory stays flat for any size.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Spool is an io.ReadCloser over a source that Spool reads eagerly.
type Spool struct {
	mu       sync.Mutex
	cond     *sync.Cond
	mem      []byte // unread bytes held in memory, before any in file
	memLimit int
	dir      string
	file     *os.File // once created, every later byte goes here
	wOff     int64    // bytes written to file
	rOff     int64    // bytes read from file
	err      error    // the source's final error (io.EOF when it ended)
	closed   bool
}

// NewSpool starts reading src in a goroutine that ends at src's end, on a
// read error, or at Close. Up to memLimit unread bytes are held in memory;
// beyond that they go to a temporary file in dir (os.TempDir() if empty).
func NewSpool(src io.Reader, memLimit int, dir string) *Spool {
	s := &Spool{memLimit: memLimit, dir: dir}
	s.cond = sync.NewCond(&s.mu)
	go s.fill(src)
	return s
}

func (s *Spool) fill(src io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := s.store(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
	}
}

func (s *Spool) store(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.file == nil && len(s.mem)+len(p) <= s.memLimit {
		s.mem = append(s.mem, p...)
		s.cond.Broadcast()
		return nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "wsgibridge-body-")
		if err != nil {
			return fmt.Errorf("cgi: spool request body: %w", err)
		}
		// Unlinked at once: the space is freed when we exit, however.
		_ = os.Remove(f.Name())
		s.file = f
	}
	if _, err := s.file.WriteAt(p, s.wOff); err != nil {
		return fmt.Errorf("cgi: spool request body: %w", err)
	}
	s.wOff += int64(len(p))
	s.cond.Broadcast()
	return nil
}

// Read reads spooled bytes, waiting for more while the source has not
// ended.
func (s *Spool) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return 0, os.ErrClosed
		}
		if len(s.mem) > 0 {
			n := copy(p, s.mem)
			s.mem = s.mem[n:]
			if len(s.mem) == 0 {
				s.mem = nil
			}
			return n, nil
		}
		if s.file != nil && s.rOff < s.wOff {
			want := min(int64(len(p)), s.wOff-s.rOff)
			n, err := s.file.ReadAt(p[:want], s.rOff)
			s.rOff += int64(n)
			if err != nil && !errors.Is(err, io.EOF) {
				return n, fmt.Errorf("cgi: read spooled body: %w", err)
			}
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		s.cond.Wait()
	}
}

// Close releases the spool; the goroutine stops at its next read of src.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.mem = nil
	s.cond.Broadcast()
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}

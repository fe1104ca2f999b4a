// Package spool is a pipe whose writer never waits: what the reader has not
// taken yet is held in memory up to a limit and in an unlinked temporary
// file beyond it, so memory stays flat whatever the size.
//
// The fronts use it for request bodies. Apache's mod_cgi and mod_cgid write
// the whole body to a script before they read any output, so a CGI program
// must take stdin as fast as it comes or an app that answers while it
// reads deadlocks. A FastCGI connection carries the bodies of several
// requests, so one request's slow reader must not stop the connection.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Spool is an io.ReadCloser fed by Write or Fill.
type Spool struct {
	mu       sync.Mutex
	cond     *sync.Cond
	mem      []byte // unread bytes held in memory, before any in file
	memLimit int
	dir      string
	file     *os.File // once created, every later byte goes here
	wOff     int64    // bytes written to file
	rOff     int64    // bytes read from file
	err      error    // why the data ended (io.EOF when it ended well)
	ended    chan struct{}
	closed   bool
}

// New returns an empty spool that holds up to memLimit unread bytes in
// memory and the rest in a temporary file in dir (os.TempDir() if empty).
func New(memLimit int, dir string) *Spool {
	s := &Spool{memLimit: memLimit, dir: dir, ended: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Fill copies src into the spool until src ends, fails, or the spool is
// closed, then ends the data. Run it in its own goroutine.
func (s *Spool) Fill(src io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			s.CloseWrite(err)
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

// ErrEnded is returned by Write after CloseWrite.
var ErrEnded = errors.New("spool: write after the end of the data")

// Write adds p to the spool; it never waits for the reader.
func (s *Spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	if s.err != nil {
		return 0, ErrEnded
	}
	if s.file == nil && len(s.mem)+len(p) <= s.memLimit {
		s.mem = append(s.mem, p...)
		s.cond.Broadcast()
		return len(p), nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "wsgibridge-body-")
		if err != nil {
			return 0, fmt.Errorf("spool request body: %w", err)
		}
		// Unlinked at once: the space is freed when the file is closed,
		// however the process ends.
		_ = os.Remove(f.Name())
		s.file = f
	}
	if _, err := s.file.WriteAt(p, s.wOff); err != nil {
		return 0, fmt.Errorf("spool request body: %w", err)
	}
	s.wOff += int64(len(p))
	s.cond.Broadcast()
	return len(p), nil
}

// CloseWrite ends the data: the reader gets what was written, then err
// (io.EOF if err is nil). Only the first call counts.
func (s *Spool) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
		close(s.ended)
	}
	s.cond.Broadcast()
}

// Done is closed when the data has ended (CloseWrite).
func (s *Spool) Done() <-chan struct{} { return s.ended }

// Ended reports whether the data has ended, and how.
func (s *Spool) Ended() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil, s.err
}

// Read reads spooled bytes, waiting for more while the data has not ended.
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
				return n, fmt.Errorf("read spooled body: %w", err)
			}
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		s.cond.Wait()
	}
}

// Close releases the spool and wakes a waiting Read; Fill stops at its
// next read of its source.
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

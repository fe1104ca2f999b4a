package bridge

// This file holds a worker's Python stacks, taken without stopping it:
// with Config.Stacks the worker has Python's faulthandler dump the stack
// of every thread to a pipe of its own on SIGUSR2 (wsgibridge/stacks.py).
// faulthandler writes from the signal handler, in C, so a dump comes also
// while the app is blocked in a C call (a sleep, a socket read, a lock);
// the request goes on. The slow log, the status page and the kill of an
// app stuck past its timeout show them.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stackQuiet is how long a dump may pause before it counts as whole
// (faulthandler writes it in one go, a thread at a time).
const stackQuiet = 50 * time.Millisecond

// stackLimit bounds what is kept of dumps nobody asked for.
const stackLimit = 1 << 20

// stackPipe reads a worker's dumps; what it reads waits for Stacks.
type stackPipe struct {
	take sync.Mutex // one Stacks at a time

	mu     sync.Mutex
	buf    []byte
	notify chan struct{} // a send when buf grew
}

// readStacks reads the dump pipe r until the worker is gone.
func readStacks(r *os.File) *stackPipe {
	s := &stackPipe{notify: make(chan struct{}, 1)}
	go func() {
		defer r.Close()
		b := make([]byte, 16<<10)
		for {
			n, err := r.Read(b)
			if n > 0 {
				s.mu.Lock()
				if len(s.buf)+n <= stackLimit {
					s.buf = append(s.buf, b[:n]...)
				}
				s.mu.Unlock()
				select {
				case s.notify <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *stackPipe) drain() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf
	s.buf = nil
	return b
}

// ErrNoStacks is returned by Stacks for a worker started without
// Config.Stacks.
var ErrNoStacks = errors.New("bridge: this worker gives no stacks")

// Stacks returns the Python stack of every thread of the worker, as
// faulthandler prints them (most recent call first), waiting at most
// wait for them; the request it runs goes on.
func (w *Worker) Stacks(wait time.Duration) (string, error) {
	s := w.stacks
	if s == nil {
		return "", ErrNoStacks
	}
	s.take.Lock()
	defer s.take.Unlock()
	s.drain() // what came unasked
	select {
	case <-w.exited:
		return "", fmt.Errorf("bridge: worker pid %d is gone", w.pid)
	default:
	}
	if err := syscall.Kill(w.pid, syscall.SIGUSR2); err != nil {
		return "", fmt.Errorf("bridge: ask worker pid %d for its stacks: %w", w.pid, err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var out []byte
	var quiet <-chan time.Time
	for {
		select {
		case <-s.notify:
			out = append(out, s.drain()...)
			quiet = time.After(stackQuiet)
		case <-quiet:
			return string(out), nil
		case <-deadline.C:
			if len(out) > 0 {
				return string(out), nil
			}
			return "", fmt.Errorf("bridge: worker pid %d gave no stacks within %v", w.pid, wait)
		case <-w.exited:
			return "", fmt.Errorf("bridge: worker pid %d exited before it gave its stacks", w.pid)
		}
	}
}

// FormatStacks turns a faulthandler dump into one block per thread with
// the innermost frame last, as Python's tracebacks have it, keeping the
// depth innermost frames of each (0: all).
func FormatStacks(dump string, depth int) string {
	var b strings.Builder
	var frames []string
	flush := func() {
		if len(frames) == 0 {
			return
		}
		if depth > 0 && len(frames) > depth {
			fmt.Fprintf(&b, "  ... (%d outer frames)\n", len(frames)-depth)
			frames = frames[:depth]
		}
		for i := len(frames) - 1; i >= 0; i-- {
			b.WriteString(frames[i])
			b.WriteByte('\n')
		}
		frames = frames[:0]
	}
	sc := bufio.NewScanner(strings.NewReader(dump))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "  "):
			frames = append(frames, line)
		case strings.TrimSpace(line) == "":
		default:
			flush()
			b.WriteString(strings.Replace(line, "(most recent call first)", "(innermost last)", 1))
			b.WriteByte('\n')
		}
	}
	flush()
	return strings.TrimRight(b.String(), "\n")
}

// stackDepth is how many frames per thread the log shows.
func (w *Worker) stackDepth() int {
	if w.cfg.StackDepth > 0 {
		return w.cfg.StackDepth
	}
	return 20
}

// stuckStack is the stacks of a worker about to be killed for an app that
// does not stop, formatted for the log, or why there are none.
func (w *Worker) stuckStack() string {
	stack, err := w.Stacks(time.Second)
	if err != nil {
		return err.Error()
	}
	return FormatStacks(stack, w.stackDepth())
}

package bridge

// This file holds the bounded wait of a FastCGI pool. Its workers take
// connections from the listening socket themselves: while one is free a
// request waits nowhere, and while every one is busy the connections wait
// in the socket's listen queue, in order, which costs nothing. The monitor
// watches that queue. Once more connections wait than PoolConfig.Backlog,
// or the oldest has waited longer than QueueTimeout, the supervisor takes
// the waiting connections itself: it answers those beyond the backlog, and
// those past the timeout, with 503 (fastcgi.Overloaded), and hands the
// others, oldest first, to workers as they become free, through the lobby
// where busy workers already pass connections to idle ones; once none is
// left it lets the queue be again.
//
// How long the oldest has waited is reckoned, not asked: the workers
// count on the board the connections they accepted, so the connection at
// the head of the queue is the one after all those accepted, and it
// arrived when the queue's arrivals (those accepted plus those waiting,
// sampled every tick) first reached its number.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

// backlog is a FastCGI pool's bounded wait; the monitor's, except retired.
type backlog struct {
	arrivals []arrival // samples, oldest first, while connections wait
	held     []held    // connections the supervisor took, oldest first
	ours     uint64    // connections the supervisor accepted
	retired  uint64    // connections accepted by workers now gone (under p.mu)
	sampled  time.Time // when the queue's length was last read
	lastWarn time.Time
	blind    bool // the queue's length cannot be read: the wait is not bounded
	refusing chan struct{}
}

// arrival says that by at, n connections had come to the listening socket.
type arrival struct {
	at time.Time
	n  uint64
}

// held is a waiting connection the supervisor took, and when it came.
type held struct {
	fd    int
	since time.Time
}

// queueEvery is how often the listen queue's length is read while every
// worker is busy (a system call to the kernel's sock_diag for a unix
// socket): the wait is bounded to about this.
const queueEvery = 50 * time.Millisecond

// refuseWait is how long a refused connection may take to send the rest
// of its request before it is answered and closed.
const refuseWait = 2 * time.Second

// maxRefusing bounds the refusals under way; beyond it a connection is
// closed unanswered (the web server answers 502).
const maxRefusing = 64

// tendBacklog bounds the wait (see the top); idle is how many workers of
// the pool are free, accepted how many connections the live ones took.
func (p *Pool) tendBacklog(now time.Time, idle int, accepted uint64) {
	q := &p.backlog
	for idle > 0 && len(q.held) > 0 {
		if err := p.pass(q.held[0].fd); err != nil {
			p.log.Warn("a waiting connection could not be handed to a worker; answering it 503", "err", err)
			p.refuse(q.held[0].fd, now)
		}
		q.held = q.held[1:]
		idle--
	}
	if q.blind || (idle > 0 && len(q.held) == 0) {
		q.arrivals = q.arrivals[:0]
		return
	}
	if len(q.held) == 0 && now.Sub(q.sampled) < queueEvery {
		return
	}
	q.sampled = now
	waiting, _, err := queueLength(p.cfg.Worker.FastCGI.Listener)
	if err != nil {
		q.blind = true
		p.log.Warn("the listen queue cannot be read: requests wait for a worker without a bound", "err", err)
		return
	}
	p.mu.Lock()
	done := accepted + q.retired + q.ours
	p.mu.Unlock()
	if waiting > 0 {
		q.arrivals = append(q.arrivals, arrival{now, done + uint64(waiting)})
	}
	for len(q.arrivals) > 1 && q.arrivals[1].n <= done {
		q.arrivals = q.arrivals[1:]
	}
	over := waiting+len(q.held) > p.cfg.Backlog
	late := waiting > 0 && now.Sub(q.arrivedAt(done+1, now)) > p.cfg.QueueTimeout
	if len(q.held) > 0 || over || late {
		p.takeWaiting(now, waiting, done)
	}
	for len(q.held) > p.cfg.Backlog {
		last := len(q.held) - 1
		p.refuse(q.held[last].fd, now)
		q.held = q.held[:last]
	}
	for len(q.held) > 0 && now.Sub(q.held[0].since) > p.cfg.QueueTimeout {
		p.refuse(q.held[0].fd, now)
		q.held = q.held[1:]
	}
}

// arrivedAt returns when connection number k came, as the samples tell
// (at the latest); now if they do not.
func (q *backlog) arrivedAt(k uint64, now time.Time) time.Time {
	for _, a := range q.arrivals {
		if a.n >= k {
			return a.at
		}
	}
	return now
}

// takeWaiting accepts the connections waiting in the listen queue, in
// order, onto the held list.
func (p *Pool) takeWaiting(now time.Time, waiting int, done uint64) {
	q := &p.backlog
	raw, err := p.cfg.Worker.FastCGI.Listener.SyscallConn()
	if err != nil {
		return
	}
	for i := 0; i < waiting; i++ {
		fd := -1
		cerr := raw.Control(func(l uintptr) {
			// Not blocking whatever the workers left the socket in: one
			// of them may take the connection first.
			if err = syscall.SetNonblock(int(l), true); err == nil {
				fd, _, err = syscall.Accept4(int(l), syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
			}
		})
		if cerr != nil || err != nil {
			return
		}
		q.ours++
		q.held = append(q.held, held{fd: fd, since: q.arrivedAt(done+uint64(i)+1, now)})
	}
}

// pass hands the connection fd to a free worker through the lobby, and
// closes the supervisor's copy.
func (p *Pool) pass(fd int) error {
	defer syscall.Close(fd)
	return p.toLobby(fd, lobbyNew)
}

// What a connection passed through the lobby is: one the keeper has a
// copy of (keeper.go), or another.
const (
	lobbyNew  = 'c'
	lobbyKept = 'k'
)

// toLobby sends the connection fd to the lobby, where the next worker to
// be free takes it.
func (p *Pool) toLobby(fd int, kind byte) error {
	raw, err := p.lobby[0].SyscallConn()
	if err != nil {
		return err
	}
	cerr := raw.Control(func(out uintptr) {
		err = syscall.Sendmsg(int(out), []byte{kind}, syscall.UnixRights(fd), nil, syscall.MSG_DONTWAIT)
	})
	if err = errors.Join(cerr, err); err != nil {
		return fmt.Errorf("bridge: pass a connection to a worker: %w", err)
	}
	return nil
}

// refuse answers the connection fd with 503 (fastcgi.Overloaded), from
// its own goroutine, and counts it.
func (p *Pool) refuse(fd int, now time.Time) {
	q := &p.backlog
	p.stat.mu.Lock()
	p.stat.refused++
	p.stat.mu.Unlock()
	if now.Sub(q.lastWarn) > 10*time.Second {
		q.lastWarn = now
		p.log.Warn("every worker is busy and the wait is full: answering requests 503 (raise --workers, --backlog or --queue-timeout)",
			"workers", p.cfg.Workers.String(), "backlog", p.cfg.Backlog, "queue_timeout", p.cfg.QueueTimeout)
	}
	f := os.NewFile(uintptr(fd), "refused")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	select {
	case q.refusing <- struct{}{}:
	default:
		conn.Close()
		return
	}
	p.slots.Add(1)
	go func() {
		defer p.slots.Done()
		defer func() { <-q.refusing }()
		if err := fastcgi.Overloaded(conn, time.Now().Add(refuseWait)); err != nil {
			p.log.Debug("refusing a request", "err", err)
		}
	}()
}

// dropHeld answers every held connection 503: the pool stops.
func (p *Pool) dropHeld() {
	q := &p.backlog
	now := time.Now()
	for _, h := range q.held {
		p.refuse(h.fd, now)
	}
	q.held = nil
}

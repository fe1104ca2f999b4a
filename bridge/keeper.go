package bridge

// This file holds the keeper: the supervisor's copy of every connection a
// FastCGI worker keeps for the web server between requests. nginx sends a
// request on whichever kept connection it picks, and the request waits
// there, unread, while the worker that holds the connection is busy; if
// that worker dies, its copies of the connections close with it, and
// without another copy the waiting requests would be lost (nginx never
// retries a POST). The keeper's copy keeps each connection open and its
// unread requests in the kernel, so when a worker dies the pool hands the
// connections it kept between requests to the other workers through the
// lobby, and closes only those with a request under way: only the request
// the dead worker was running fails.
//
// A worker tells the keeper of a connection once, when the connection
// turns out kept (FCGI_KEEP_CONN), sending it on a socket pair the
// workers share; it lists what it keeps on the board (board.go), marked
// while a request of the connection is read or runs, and shuts a kept
// connection down before it closes it, so the web server sees it end
// whatever copies remain. The keeper closes its copies of the connections
// that ended. Its side in the worker is wsgibridge/fastcgi/keep.py.

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// keeper holds the supervisor's copies of the kept connections, by the
// inode of their socket.
type keeper struct {
	theirs *os.File // the end the workers inherit and write to
	ours   int      // the end the supervisor reads

	mu     sync.Mutex
	conns  map[uint64]int // inode: the supervisor's descriptor
	closed sync.Once
}

// openKeeper makes the socket pair the workers send their kept
// connections on. Each connection comes in a message of its own.
func openKeeper() (*keeper, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bridge: kept connections' socket: %w", err)
	}
	return &keeper{theirs: os.NewFile(uintptr(fds[0]), "keeper"), ours: fds[1], conns: map[uint64]int{}}, nil
}

// collect takes the connections the workers sent since it last looked.
func (k *keeper) collect() {
	k.mu.Lock()
	defer k.mu.Unlock()
	buf := make([]byte, 1)
	oob := make([]byte, syscall.CmsgSpace(4))
	for {
		_, oobn, _, _, err := syscall.Recvmsg(k.ours, buf, oob, syscall.MSG_DONTWAIT|syscall.MSG_CMSG_CLOEXEC)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, fd := range receivedFds(oob[:oobn]) {
			var st syscall.Stat_t
			if syscall.Fstat(fd, &st) != nil {
				syscall.Close(fd)
				continue
			}
			if _, dup := k.conns[st.Ino]; dup {
				syscall.Close(fd) // sent again by the worker it was passed to
				continue
			}
			k.conns[st.Ino] = fd
		}
	}
}

func receivedFds(oob []byte) []int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := syscall.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// sweep closes the copies of connections that ended: shut down by their
// worker or closed by the web server, a socket reports a hang-up, which
// poll tells whatever events are asked for.
func (k *keeper) sweep() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.conns) == 0 {
		return
	}
	fds := make([]pollFd, 0, len(k.conns))
	for _, fd := range k.conns {
		fds = append(fds, pollFd{fd: int32(fd)})
	}
	if poll(fds, 0) == 0 {
		return
	}
	ended := map[int]bool{}
	for _, f := range fds {
		if f.revents != 0 {
			ended[int(f.fd)] = true
		}
	}
	for ino, fd := range k.conns {
		if ended[fd] {
			syscall.Close(fd)
			delete(k.conns, ino)
		}
	}
}

// rescue deals with the connections a dead worker kept (its table on the
// board): one with a request under way is closed, its request failed with
// the worker; one between requests goes to pass (the lobby), and what
// waits in it is served by another worker. It returns how many of each.
func (k *keeper) rescue(kept []uint64, pass func(fd int) error) (passed, closed int) {
	k.collect()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range kept {
		ino := w >> 1
		fd, ok := k.conns[ino]
		if !ok {
			continue // it ended already
		}
		if w&1 == 0 && pass(fd) == nil {
			passed++
			continue
		}
		syscall.Shutdown(fd, syscall.SHUT_RDWR)
		syscall.Close(fd)
		delete(k.conns, ino)
		closed++
	}
	return passed, closed
}

// close closes every copy and the socket pair, when no worker is left.
func (k *keeper) close() {
	k.closed.Do(func() {
		k.collect()
		k.mu.Lock()
		defer k.mu.Unlock()
		for ino, fd := range k.conns {
			syscall.Close(fd)
			delete(k.conns, ino)
		}
		syscall.Close(k.ours)
		k.theirs.Close()
	})
}

// rescueKept hands the connections the gone worker m kept between
// requests to the other workers, and closes those it had a request under
// way on. A worker that leaves on purpose passes its own on first.
func (p *Pool) rescueKept(m *member) {
	passed, closed := p.keeper.rescue(p.board.kept(m.slot), func(fd int) error { return p.toLobby(fd, lobbyKept) })
	if passed+closed > 0 {
		p.log.Info("worker gone: the requests waiting on its connections go to the other workers",
			"pid", m.w.Pid(), "passed", passed, "closed_with_a_request_under_way", closed)
	}
}

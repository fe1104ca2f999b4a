package fastcgi

// This file reads how many connections wait in a listening socket's
// accept queue, for the status page: Linux tells it for TCP in TCP_INFO,
// and for a unix socket through sock_diag (what "ss -xl" shows as Recv-Q).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// ErrNoQueueLength is returned by QueueLength for a socket whose queue
// this system does not tell.
var ErrNoQueueLength = errors.New("fastcgi: the listen queue's length is not known for this socket")

// QueueLength returns how many connections wait to be accepted on the
// listening socket fd, and how many may (its backlog).
func QueueLength(fd int) (waiting, backlog int, err error) {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: %w", err)
	}
	switch sa.(type) {
	case *syscall.SockaddrInet4, *syscall.SockaddrInet6:
		var info syscall.TCPInfo
		size := uint32(unsafe.Sizeof(info))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			return 0, 0, fmt.Errorf("fastcgi: listen queue: %w", errno)
		}
		// For a listening socket Linux puts the accept queue's length in
		// tcpi_unacked and its bound in tcpi_sacked.
		return int(info.Unacked), int(info.Sacked), nil
	case *syscall.SockaddrUnix:
		return unixQueue(fd)
	}
	return 0, 0, ErrNoQueueLength
}

// sock_diag's names (linux/sock_diag.h, linux/unix_diag.h), which package
// syscall lacks.
const (
	netlinkSockDiag   = 4
	sockDiagByFamily  = 20
	unixDiagShowRQLen = 0x10
	unixDiagRQLen     = 4
	tcpListen         = 10
)

// unixQueue asks sock_diag about the unix socket fd, found by its inode.
func unixQueue(fd int) (int, int, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: %w", err)
	}
	nl, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", err)
	}
	defer syscall.Close(nl)
	// nlmsghdr (16 bytes), then unix_diag_req (24 bytes).
	req := make([]byte, 16+24)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence
	req[16] = syscall.AF_UNIX
	ne.PutUint32(req[20:], 1<<tcpListen)
	ne.PutUint32(req[24:], uint32(st.Ino))
	ne.PutUint32(req[28:], unixDiagShowRQLen)
	ne.PutUint32(req[32:], ^uint32(0)) // no cookie
	ne.PutUint32(req[36:], ^uint32(0))
	if err := syscall.Sendto(nl, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := syscall.Recvfrom(nl, buf, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case syscall.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if errno := -int32(ne.Uint32(m.Data)); errno != 0 {
					return 0, 0, fmt.Errorf("fastcgi: listen queue: sock_diag: %w", syscall.Errno(errno))
				}
			}
		case sockDiagByFamily:
			// unix_diag_msg (16 bytes), then attributes.
			for attrs := m.Data[min(16, len(m.Data)):]; len(attrs) >= 4; {
				l, t := int(ne.Uint16(attrs)), ne.Uint16(attrs[2:])
				if l < 4 || l > len(attrs) {
					break
				}
				if t == unixDiagRQLen && l >= 12 {
					return int(ne.Uint32(attrs[4:])), int(ne.Uint32(attrs[8:])), nil
				}
				attrs = attrs[min((l+3)&^3, len(attrs)):]
			}
		}
	}
	return 0, 0, ErrNoQueueLength
}

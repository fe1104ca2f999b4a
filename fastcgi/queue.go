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
	// nlmsghdr (16 bytes), then unix_diag_req (24 bytes). On the stack,
	// as the answer's buffer: the pool's monitor asks often.
	var req [16 + 24]byte
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
	if _, _, errno := syscall.Syscall6(syscall.SYS_SENDTO, uintptr(nl), uintptr(unsafe.Pointer(&req[0])), uintptr(len(req)), 0, 0, 0); errno != 0 {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", errno)
	}
	var buf [4096]byte
	got, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(nl), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
	if errno != 0 {
		return 0, 0, fmt.Errorf("fastcgi: listen queue: netlink: %w", errno)
	}
	// The netlink messages: nlmsghdr (length, type, ...), then the data.
	for msg := buf[:got]; len(msg) >= 16; {
		l := int(ne.Uint32(msg))
		if l < 16 || l > len(msg) {
			break
		}
		data := msg[16:l]
		switch ne.Uint16(msg[4:]) {
		case syscall.NLMSG_ERROR:
			if len(data) >= 4 {
				if errno := -int32(ne.Uint32(data)); errno != 0 {
					return 0, 0, fmt.Errorf("fastcgi: listen queue: sock_diag: %w", syscall.Errno(errno))
				}
			}
		case sockDiagByFamily:
			// unix_diag_msg (16 bytes), then attributes.
			for attrs := data[min(16, len(data)):]; len(attrs) >= 4; {
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
		msg = msg[min((l+3)&^3, len(msg)):]
	}
	return 0, 0, ErrNoQueueLength
}

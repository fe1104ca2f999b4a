package bridge

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// fastPath is the C fast path of the FastCGI workers
// (wsgibridge/fastcgi/fastpath.c) built as a shared object for Python's
// stable ABI, embedded by make build (fastpath_embed.go, build tag
// fastpath); nil in a binary built without it, whose workers read
// requests in Python.
var fastPath []byte

// errNoFastPath says why FastCGI workers read requests in Python.
var errNoFastPath = errors.New("this binary was built without the C fast path (make build builds it in; it needs gcc and python3-dev)")

// FastPath reports whether FastCGI workers get the C fast path, and if
// not, why.
func FastPath() error {
	_, err := fastPathFile()
	return err
}

// fastPathFile is fastPath as a sealed in-memory file, made once and
// shared by every worker: each loads it from its own fd, so no file on
// disk can be swapped for it, a noexec /tmp does not stop it, and the
// workers share its pages.
var fastPathFile = sync.OnceValues(func() (*os.File, error) {
	if fastPath == nil {
		return nil, errNoFastPath
	}
	f, err := memfd("wsgibridge-fastpath", fastPath)
	if err != nil {
		return nil, fmt.Errorf("bridge: the C fast path cannot be handed to workers: %w", err)
	}
	return f, nil
})

// memfdCreate is memfd_create's number on each architecture: package
// syscall's tables, frozen, lack it on most.
var memfdCreate = map[string]uintptr{
	"amd64": 319, "386": 356, "arm": 385, "arm64": 279, "loong64": 279, "riscv64": 279,
	"ppc64": 360, "ppc64le": 360, "s390x": 350, "mips64": 5314, "mips64le": 5314,
}

// Linux's memfd_create flags and sealing commands (not in package syscall).
const (
	mfdCloexec      = 0x1
	mfdAllowSealing = 0x2
	fAddSeals       = 1033
	fSealAll        = 0x1 | 0x2 | 0x4 | 0x8 // seal, shrink, grow, write
)

// memfd returns an anonymous file holding data, sealed against change.
func memfd(name string, data []byte) (*os.File, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	nr, ok := memfdCreate[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("memfd_create: no system call number known for %s", runtime.GOARCH)
	}
	fd, _, errno := syscall.Syscall(nr, uintptr(unsafe.Pointer(p)), mfdCloexec|mfdAllowSealing, 0)
	if errno != 0 {
		return nil, fmt.Errorf("memfd_create: %w", errno)
	}
	f := os.NewFile(fd, name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd: %w", err)
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, fAddSeals, fSealAll); errno != 0 {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", errno)
	}
	return f, nil
}

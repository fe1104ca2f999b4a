package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4), which package syscall lacks.
const madvPageout = 21

// releaseExecutable gives back the pages of our own executable that the
// daemon has touched so far. Starting up (the runtime, the packages'
// initialisation, the flags, starting the pool) maps in some 5 MiB of
// the binary, of which serving needs about 1 MiB; the rest would stay in
// the daemon's RSS until the kernel ran short of memory. Only read-only
// mappings are released: they are never written, so a page needed again
// comes back from the file, as it was, on its first touch.
//
// MADV_PAGEOUT, not MADV_DONTNEED: after DONTNEED the pages stay in the
// page cache, and each page touched again brings its cached neighbours
// with it (the kernel maps up to 64 KiB around a fault), so the daemon's
// supervision alone mapped 4 of the 5 MiB back in. MADV_RANDOM first, so
// that a page touched again is read alone, without the readahead around
// it. Pages another process maps too (a "wsgibridge cgi" running) are
// left where they are.
func releaseExecutable() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("release executable pages: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return fmt.Errorf("release executable pages: %w", err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		// address perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(line, " "+exe) || strings.Contains(f[1], "w") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return fmt.Errorf("release executable pages: unreadable mapping %q", line)
		}
		errno := madvise(start, end, syscall.MADV_RANDOM)
		if errno == 0 {
			errno = madvise(start, end, madvPageout)
		}
		if errno == syscall.EINVAL {
			errno = madvise(start, end, syscall.MADV_DONTNEED) // a kernel before 5.4
		}
		if errno != 0 {
			return fmt.Errorf("release executable pages: madvise %s: %w", f[0], errno)
		}
	}
	return nil
}

func madvise(start, end uint64, advice uintptr) syscall.Errno {
	_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), advice)
	return errno
}

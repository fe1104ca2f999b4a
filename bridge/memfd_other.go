//go:build !amd64

package bridge

import "syscall"

const sysMemfdCreate = syscall.SYS_MEMFD_CREATE

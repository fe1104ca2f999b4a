package bridge

// Package syscall's table for amd64 was frozen before memfd_create.
const sysMemfdCreate = 319

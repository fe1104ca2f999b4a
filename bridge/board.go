package bridge

// This file holds the board: a page of memory the FastCGI workers share
// with the supervisor, where each worker reports, by its slot, what the
// supervisor (and the worker's peers) read without asking it. It is the
// one channel from the FastCGI workers' requests to the supervisor; the
// pool's slots read it to kill a stuck app, and its activity to stop an
// idle daemon. The workers' side is wsgibridge/fastcgi/board.py.
//
// Layout, one byte or word per slot, boardSlots slots:
//
//	offset slot                   1 while the worker waits for work (idle)
//	offset boardServed + 8*slot   the requests it has served, a
//	                              little-endian uint64 that only grows
//	offset boardRunning + slot    1 while its app runs under a timeout

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"syscall"
)

const (
	// boardSlots bounds the FastCGI workers alive at once (a reload has
	// two generations alive).
	boardSlots   = 64
	boardServed  = 64
	boardRunning = boardServed + 8*boardSlots
	boardSize    = 4096
)

// board is the shared page and which of its slots are taken.
type board struct {
	file *os.File // what the workers inherit and map

	mu   sync.Mutex
	data []byte
	used [boardSlots]bool
}

// openBoard makes the board, in an unlinked file the workers inherit.
func openBoard() (*board, error) {
	f, err := os.CreateTemp("", "wsgibridge-board-")
	if err != nil {
		return nil, fmt.Errorf("bridge: worker board: %w", err)
	}
	_ = os.Remove(f.Name())
	if err := f.Truncate(boardSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("bridge: worker board: %w", err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, boardSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bridge: worker board: %w", err)
	}
	return &board{file: f, data: data}, nil
}

// take returns a free slot, marked busy.
func (b *board) take() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, used := range b.used {
		if !used {
			b.used[i] = true
			b.data[i] = 0
			return i
		}
	}
	return boardSlots - 1
}

// free clears a slot whose worker is gone, for the next one.
func (b *board) free(slot int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data[slot] = 0
	b.data[boardRunning+slot] = 0
	binary.LittleEndian.PutUint64(b.data[boardServed+8*slot:], 0)
	b.used[slot] = false
}

// activity returns a number that changes whenever a request is served,
// and whether a worker is serving one now.
func (b *board) activity() (served uint64, busy bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, used := range b.used {
		if !used {
			continue
		}
		served += binary.LittleEndian.Uint64(b.data[boardServed+8*i:])
		busy = busy || b.data[i] == 0
	}
	return served, busy
}

// runningApp returns the request count of the worker in slot if its app
// is running under a timeout, else 0.
func (b *board) runningApp(slot int) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.data[boardRunning+slot] == 0 {
		return 0
	}
	return binary.LittleEndian.Uint64(b.data[boardServed+8*slot:])
}

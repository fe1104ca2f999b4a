package bridge

// This file holds the board: memory the FastCGI workers share with the
// supervisor, where each worker reports, by its slot, what the supervisor
// (and the worker's peers) read without asking it. It is the one channel
// from the FastCGI workers' requests to the supervisor: the pool's slots
// read it to kill a stuck app, IdleFor to stop an idle daemon, Status and
// the slow log to show what runs. The workers' side is
// wsgibridge/fastcgi/board.py, which must agree with this layout.
//
//	offset slot                       1 while the worker waits for work
//	                                  (idle), a byte per slot, boardSlots
//	offset boardSlots                 1 while the pool is degraded (a crash
//	                                  storm), for the workers' ping path
//	offset boardBlocks + slot*boardBlock, the slot's block of native-endian
//	uint64 words:
//	  wordServed                      requests served; only grows
//	  wordRunning                     while its app runs, the number of the
//	                                  request (served), else 0
//	  wordSince                       a request's start, unix nanoseconds,
//	                                  told once it has run 20 ms
//	  wordSinceOf                     the number of that request: the start
//	                                  and the line are the running one's
//	                                  only while it equals wordRunning
//	  wordClasses...+4                requests answered 1xx..5xx (499: the
//	                                  client left) } with status
//	  wordBuckets...+len(Buckets)     requests by duration, a word per
//	                                  bucket of DurationBuckets, and one
//	                                  for longer ones               } with status
//	  wordMicros                      their durations' sum, microseconds }
//	  wordLine                        the length of the request line after it
//	  wordAccepted                    connections it took from the listening
//	                                  socket; only grows
//	  (bytes from boardLineAt)        the running request's method and path
//	                                  (no query), once it has run 20 ms
//	offset boardKept + slot*boardKeptSize, the slot's kept connections
//	(keeper.go), boardKeptMax native-endian uint64 words: each 0 (free),
//	or a socket's inode << 1, | 1 while a request of its is read or runs

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// DurationBuckets are the upper bounds of the request-duration histogram,
// in seconds (Prometheus's usual ones and 30 s).
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

const (
	// boardSlots bounds the FastCGI workers alive at once (a reload has
	// two generations alive).
	boardSlots  = 64
	boardBlocks = 4096
	boardBlock  = 512
	boardKept   = boardBlocks + boardSlots*boardBlock
	// boardKeptMax bounds the connections a worker keeps that outlive
	// it; it keeps more, but those are lost with it.
	boardKeptMax  = 128
	boardKeptSize = boardKeptMax * 8
	boardSize     = boardKept + boardSlots*boardKeptSize

	wordServed   = 0
	wordRunning  = 1
	wordSince    = 2
	wordSinceOf  = 3
	wordClasses  = 4
	wordBuckets  = wordClasses + 5
	wordMicros   = wordBuckets + 13 // len(DurationBuckets) + 1
	wordLine     = wordMicros + 1
	wordAccepted = wordLine + 1
	boardLineAt  = (wordAccepted + 1) * 8
	boardLineMax = boardBlock - boardLineAt
)

// board is the shared memory and which of its slots are taken.
type board struct {
	file *os.File // what the workers inherit and map

	mu   sync.Mutex
	data []byte
	used [boardSlots]bool
}

// slotReport is what a worker reported in its slot.
type slotReport struct {
	idle     bool
	served   uint64
	accepted uint64
	running  uint64    // the request running, or 0
	since    time.Time // its start, when it has run 20 ms; else zero
	line     string    // its method and path, likewise
	counts   counts
}

// counts are a worker's (or the pool's) request counters.
type counts struct {
	classes [5]uint64 // 1xx..5xx
	buckets [13]uint64
	micros  uint64
}

func (c *counts) add(o counts) {
	for i := range c.classes {
		c.classes[i] += o.classes[i]
	}
	for i := range c.buckets {
		c.buckets[i] += o.buckets[i]
	}
	c.micros += o.micros
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

func (b *board) word(slot, i int) uint64 {
	return binary.NativeEndian.Uint64(b.data[boardBlocks+slot*boardBlock+8*i:])
}

// take returns a free slot, cleared, marked busy.
func (b *board) take() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, used := range b.used {
		if !used {
			b.used[i] = true
			b.data[i] = 0
			clear(b.data[boardBlocks+i*boardBlock : boardBlocks+(i+1)*boardBlock])
			clear(b.keptTable(i))
			return i
		}
	}
	return boardSlots - 1
}

// free gives back the slot of a worker that is gone, and returns its
// last report.
func (b *board) free(slot int) slotReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.readLocked(slot)
	b.data[slot] = 0
	clear(b.data[boardBlocks+slot*boardBlock : boardBlocks+(slot+1)*boardBlock])
	b.used[slot] = false
	return r
}

func (b *board) keptTable(slot int) []byte {
	return b.data[boardKept+slot*boardKeptSize : boardKept+(slot+1)*boardKeptSize]
}

// kept returns the connections the worker in slot kept, as it left them
// (each an inode << 1, | 1 while a request of its was under way), and
// clears its table: the worker is gone.
func (b *board) kept(slot int) []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.keptTable(slot)
	var kept []uint64
	for i := 0; i < len(t); i += 8 {
		if w := binary.NativeEndian.Uint64(t[i:]); w != 0 {
			kept = append(kept, w)
		}
	}
	clear(t)
	return kept
}

// read returns what the worker in slot reports.
func (b *board) read(slot int) slotReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readLocked(slot)
}

func (b *board) readLocked(slot int) slotReport {
	r := slotReport{idle: b.data[slot] == 1, served: b.word(slot, wordServed), running: b.word(slot, wordRunning),
		accepted: b.word(slot, wordAccepted)}
	for i := range r.counts.classes {
		r.counts.classes[i] = b.word(slot, wordClasses+i)
	}
	for i := range r.counts.buckets {
		r.counts.buckets[i] = b.word(slot, wordBuckets+i)
	}
	r.counts.micros = b.word(slot, wordMicros)
	if r.running != 0 && b.word(slot, wordSinceOf) == r.running {
		if since := b.word(slot, wordSince); since != 0 {
			r.since = time.Unix(0, int64(since))
			n := min(int(b.word(slot, wordLine)), boardLineMax)
			at := boardBlocks + slot*boardBlock + boardLineAt
			r.line = string(b.data[at : at+n])
		}
	}
	return r
}

// peek returns what the monitor reads of the worker in slot each round:
// whether it is idle, what it served and how many connections it took;
// the rest of read's report, which allocates, it needs not.
func (b *board) peek(slot int) (idle bool, served, accepted uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data[slot] == 1, b.word(slot, wordServed), b.word(slot, wordAccepted)
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
		served += b.word(i, wordServed)
		busy = busy || b.data[i] == 0
	}
	return served, busy
}

// setDegraded sets the flag that tells the workers the pool is degraded.
func (b *board) setDegraded(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data[boardSlots] = 0
	if on {
		b.data[boardSlots] = 1
	}
}

// runningApp returns the number of the request the worker in slot runs,
// or 0 when its app is not running.
func (b *board) runningApp(slot int) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.word(slot, wordRunning)
}

package bridge

// This file holds the framed protocol between the bridge and a Python
// worker (wsgibridge/frames.py is the worker's side). The worker reads
// frames on its fd 3 and writes frames on its fd 4; its stdin, stdout and
// stderr are never part of it.
//
// Every frame is an 8-byte header and a payload:
//
//	+--------+--------+-----------------+-----------------------------------+
//	| type   | flags  | request id      | payload length                    |
//	| uint8  | uint8  | uint16, big end | uint32, big endian                |
//	+--------+--------+-----------------+-----------------------------------+
//
// Bridge -> worker, per request: R (the environ, encoded as a Python marshal
// dict of str -> str), any number of B (body bytes) and exactly one E (end of
// body). E is always sent, also when the response ended before the body did,
// so the worker knows where the next request starts; flag flagBroken says
// the body broke off (payload: why), and the app's reads that reach the
// break raise instead of giving a cut body as a whole one.
//
// Worker -> bridge: Y (ready; payload: the app's own source files, one per
// line) or I (import failed, payload: what failed) once after start; then per request H (the CGI header block, "Status:" first),
// D (body bytes, flag flushData when the client should get them now), L (a
// log line, flags give the level), and one F (finished; flag finishedAppError
// when the worker made a 500 page for an app error) or X (aborted after the
// headers were sent; payload: why). On F and X, flag finishedExiting says
// the worker exits after this request.
//
// Every per-request frame carries the request id the bridge chose, so a
// frame left over from an earlier request is detected, not misdelivered.

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
)

const headerLen = 8

// Frame types.
const (
	frameRequest      = 'R'
	frameBody         = 'B'
	frameBodyEnd      = 'E'
	frameReady        = 'Y'
	frameImportFailed = 'I'
	frameHead         = 'H'
	frameData         = 'D'
	frameLog          = 'L'
	frameFinished     = 'F'
	frameAborted      = 'X'
	frameChanged      = 'C'
	frameAccess       = 'A'
)

// Frame flags.
const (
	flagRunOnce      = 1 // R: wsgi.run_once
	flagBroken       = 1 // E: the body broke off; payload: why
	flushData        = 1 // D: pass to the client now
	finishedAppError = 1 // F: the response is the worker's 500 page
	finishedExiting  = 2 // F, X: the worker exits after this request
	logWarn          = 1 // L
	logError         = 2 // L
)

// Limits on what the worker may send; both are far above what a valid
// worker sends (32 KiB of headers, 1 MiB per body frame).
const (
	maxHeadFrame  = 64 << 10
	maxDataFrame  = 1 << 20
	maxLogFrame   = 64 << 10
	maxFilesFrame = 4 << 20
	bodyChunk     = 64 << 10
)

// errProtocol is returned, wrapped, when the worker sends a frame the
// protocol does not allow; the worker is then unusable.
var errProtocol = errors.New("worker protocol error")

type frameHeader struct {
	kind  byte
	flags byte
	id    uint16
	size  uint32
}

func appendHeader(b []byte, kind, flags byte, id uint16, size int) []byte {
	b = append(b, kind, flags)
	b = binary.BigEndian.AppendUint16(b, id)
	return binary.BigEndian.AppendUint32(b, uint32(size))
}

func readHeader(r io.Reader, buf *[headerLen]byte) (frameHeader, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return frameHeader{}, err
	}
	return frameHeader{
		kind:  buf[0],
		flags: buf[1],
		id:    binary.BigEndian.Uint16(buf[2:4]),
		size:  binary.BigEndian.Uint32(buf[4:8]),
	}, nil
}

// appendEnviron appends env as a Python marshal dict of str -> str.
//
// Each string uses marshal's ASCII types ('z' up to 255 bytes, 'a' above),
// which CPython decodes as one byte per code point: exactly the latin-1
// decoding PEP 3333 asks for, for every byte 0x00-0xFF, with no transcoding
// here and a C-speed decoder (marshal.loads) in the worker.
func appendEnviron(b []byte, env []Var) []byte {
	b = append(b, '{')
	for _, v := range env {
		b = appendPyStr(b, v.Name)
		b = appendPyStr(b, v.Value)
	}
	return append(b, '0')
}

func appendPyStr(b []byte, s string) []byte {
	if len(s) < 256 {
		b = append(b, 'z', byte(len(s)))
	} else {
		b = append(b, 'a')
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	}
	return append(b, s...)
}

// logLevel is the level of an L frame's flags.
func logLevel(flags byte) slog.Level {
	switch flags {
	case logWarn:
		return slog.LevelWarn
	case logError:
		return slog.LevelError
	}
	return slog.LevelInfo
}

package bridge

// This file holds how a worker serves a request sent over the frames
// (the cgi and http modes): the request and its body go out as frames,
// the response comes back as frames and is written to a ResponseWriter,
// and a request that must end early is stopped inside the app.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ResponseWriter is where a response goes. Both the CGI and the FastCGI
// front write a CGI response; an HTTP front parses the header block.
type ResponseWriter interface {
	// WriteHeader is called once, before any body, with the status code
	// and the CGI header block ("Status: 200 OK\r\n...\r\n\r\n").
	WriteHeader(status int, block []byte) error
	// Write writes body bytes.
	Write(p []byte) (int, error)
	// Flush passes what was written to the client now.
	Flush() error
}

// Result tells what a request became.
type Result struct {
	// Status is the HTTP status sent, 0 if nothing was sent.
	Status int
	// BodyBytes counts the body bytes the worker produced.
	BodyBytes int64
	// AppError says the status is the worker's 500 page for an app error.
	AppError bool
	// CutShort says the headers went out but the body did not end well:
	// the client got a truncated response.
	CutShort bool
}

// Errors returned by Serve, wrapped with details.
var (
	// ErrAborted: the app failed after its headers were sent.
	ErrAborted = errors.New("response aborted")
	// ErrWorkerDied: the worker exited or was killed during the request.
	ErrWorkerDied = errors.New("worker died")
	// ErrStopped: the request's context ended (its deadline, or a signal)
	// and the worker was killed.
	ErrStopped = errors.New("request stopped")
)

// Serve runs one request on the worker and writes the response to rw; what
// rw holds unflushed when Serve returns is the caller's to send. A
// request the bridge refuses gets its error response and a *StatusError.
//
// When ctx ends (the client went away, a deadline, a signal) the request
// is stopped: the worker gets SIGUSR1 and raises Stop inside the app, so
// its iterable is closed and the worker serves on; if the request has not
// ended within Config.StopGrace (the app is stuck where Python cannot
// interrupt it) the worker is killed. Serve then returns an error wrapping
// ErrStopped (with where the app was, when the worker could tell), and the
// client gets 504 if nothing was sent yet; for a client that left (see
// clientLeft) nothing is sent and the Result says 499. If the worker
// dies, the client gets 502 and the error wraps ErrWorkerDied.
func (w *Worker) Serve(ctx context.Context, req *Request, rw ResponseWriter) (Result, error) {
	c, err := newCall(req)
	if err != nil {
		return refuse(rw, err)
	}
	defer c.free()
	return w.serve(ctx, c, rw)
}

// call is a request made ready for a worker: its frames up to the body,
// which a worker takes in one write, from the request's own goroutine or,
// when it waited for the worker, from the one that gave the worker back
// (Pool.release), so that the worker finds it without waiting for this
// goroutine to be scheduled.
type call struct {
	req     *Request
	env     []Var
	length  int64
	hasBody bool
	frame   []byte  // R, and E when there is no body; ids set by begin
	buf     *[]byte // frame's buffer, from frameBufs
	endAt   int     // where E's header starts in frame, 0 if not there
	// Set by begin, under the hand-off's ordering.
	begun bool
	id    uint16
	sent  int   // how much of frame went out
	werr  error // why sending it failed
}

var frameBufs = sync.Pool{New: func() any { return new([]byte) }}

// newCall normalizes req's environ and encodes its frames; a request the
// bridge refuses gives a *StatusError.
func newCall(req *Request) (*call, error) {
	env, length, toEOF, err := normalize(req.Env)
	if err != nil {
		return nil, err
	}
	c := &call{req: req, env: env, length: length,
		hasBody: req.Body != nil && (length > 0 || toEOF)}
	var flags byte
	if req.RunOnce {
		flags |= flagRunOnce
	}
	c.buf = frameBufs.Get().(*[]byte)
	b := appendHeader((*c.buf)[:0], frameRequest, flags, 0, 0)
	b = appendEnviron(b, env)
	putSize(b, len(b)-headerLen)
	if !c.hasBody {
		c.endAt = len(b)
		b = appendHeader(b, frameBodyEnd, 0, 0, 0)
	}
	c.frame = b
	return c, nil
}

// free gives the call's buffer back once its request is over.
func (c *call) free() {
	if cap(c.frame) <= 64<<10 {
		*c.buf = c.frame[:0]
		frameBufs.Put(c.buf)
	}
	c.frame, c.buf = nil, nil
}

// refuse answers a request that newCall refused.
func refuse(rw ResponseWriter, err error) (Result, error) {
	var se *StatusError
	if errors.As(err, &se) {
		return Result{Status: se.Status}, errors.Join(err, WriteError(rw, se.Status))
	}
	return Result{}, err
}

// begin makes c the worker's request: it gets its id, and a stop from now
// on is its. The worker must be between requests.
func (w *Worker) begin(c *call) {
	w.nextID++
	c.id, c.begun = w.nextID, true
	binary.BigEndian.PutUint16(c.frame[2:4], c.id)
	if c.endAt > 0 {
		binary.BigEndian.PutUint16(c.frame[c.endAt+2:c.endAt+4], c.id)
	}
	w.mu.Lock()
	w.current, w.stopping, w.answered = c.id, false, false
	w.mu.Unlock()
}

// trySend writes what of c's frames the pipe takes now, without waiting;
// send writes the rest.
func (w *Worker) trySend(c *call) {
	if w.toPyFD == nil {
		return
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_ = w.toPyFD.Write(func(fd uintptr) bool {
		n, err := syscall.Write(int(fd), c.frame[c.sent:])
		if n > 0 {
			c.sent += n
		}
		if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
			c.werr = err
		}
		return true
	})
}

// send writes what of c's frames has not gone out yet.
func (w *Worker) send(c *call) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if c.werr == nil && c.sent < len(c.frame) {
		_, c.werr = w.toPy.Write(c.frame[c.sent:])
		c.sent = len(c.frame)
	}
	return c.werr
}

// serve runs c on the worker: Serve's work, for a call that newCall made
// and that may have been begun on the worker already (Pool.release).
func (w *Worker) serve(ctx context.Context, c *call, rw ResponseWriter) (Result, error) {
	if !c.begun {
		w.begin(c)
	}
	id := c.id
	stop := context.AfterFunc(ctx, func() { w.ended(ctx, id) })
	defer func() {
		stop()
		w.mu.Lock()
		w.current = 0
		if w.late != nil {
			w.late.Stop()
			w.late = nil
		}
		w.mu.Unlock()
	}()
	werr := w.send(c)
	var body *bodySender
	if c.hasBody && werr == nil {
		body = &bodySender{w: w, id: id, body: c.req.Body, env: c.env, remaining: c.length}
		go body.run()
		defer body.end(true)
	}
	if err := w.Ready(ctx); err != nil {
		var ie *ImportError
		if errors.As(err, &ie) {
			return Result{}, err
		}
		return w.failed(ctx, rw, Result{}, err)
	}
	return w.readResponse(ctx, id, rw)
}

func (w *Worker) readResponse(ctx context.Context, id uint16, rw ResponseWriter) (Result, error) {
	var res Result
	// The header block, and its Content-Length (-1: none), read only when
	// a flush needs it.
	var head []byte
	length, parsed := int64(-1), false
	// After a client write fails the worker's output is still read to
	// its end, so the worker stays in step; the error is returned then.
	var clientErr error
	for {
		h, err := readHeader(w.r, &w.hdr)
		if err != nil {
			return w.failed(ctx, rw, res, err)
		}
		if h.id != id {
			return w.desync(ctx, rw, res, fmt.Sprintf("frame %q for request %d during request %d", h.kind, h.id, id))
		}
		switch h.kind {
		case frameHead:
			block, err := w.readPayload(h.size, maxHeadFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			if w.stopped() {
				continue // the request was stopped: nothing more goes out
			}
			if res.Status != 0 {
				return w.desync(ctx, rw, res, "second header block")
			}
			status, ok := parseStatus(block)
			if !ok {
				return w.desync(ctx, rw, res, "header block with a malformed Status line")
			}
			res.Status, head = status, block
			clientErr = rw.WriteHeader(status, block)
		case frameData:
			stopped := w.stopped()
			if (res.Status == 0 && !stopped) || h.size > maxDataFrame {
				return w.desync(ctx, rw, res, fmt.Sprintf("body frame of %d bytes", h.size))
			}
			if !stopped {
				res.BodyBytes += int64(h.size)
			}
			for n := int(h.size); n > 0; {
				chunk := w.buf[:min(n, len(w.buf))]
				if _, err := io.ReadFull(w.r, chunk); err != nil {
					return w.failed(ctx, rw, res, err)
				}
				n -= len(chunk)
				if clientErr == nil && !stopped {
					_, clientErr = rw.Write(chunk)
				}
			}
			if h.flags&flushData != 0 && clientErr == nil && !stopped {
				if !parsed {
					length, parsed = contentLength(head), true
				}
				if res.BodyBytes == length {
					// Before the flush: the web server may close the
					// connection as soon as it has the last byte.
					w.mu.Lock()
					w.answered = true
					w.mu.Unlock()
				}
				clientErr = rw.Flush()
			}
		case frameLog:
			msg, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			w.log.Log(ctx, logLevel(h.flags), string(msg))
		case frameFinished:
			// No flush here: the front ends the response, so what is
			// left goes out with its end (one write for a small one).
			res.AppError = h.flags&finishedAppError != 0
			if h.flags&finishedExiting != 0 {
				w.unusable.Store(true)
			}
			var summary []byte
			if h.size > 0 {
				if summary, err = w.readPayload(h.size, maxLogFrame); err != nil {
					return w.failed(ctx, rw, res, err)
				}
			}
			if w.stopped() {
				return w.stoppedResult(ctx, rw, res, summary)
			}
			if clientErr != nil {
				return res, fmt.Errorf("bridge: write response: %w", clientErr)
			}
			return res, nil
		case frameAborted:
			if h.flags&finishedExiting != 0 {
				w.unusable.Store(true)
			}
			msg, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			if w.stopped() {
				return w.stoppedResult(ctx, rw, res, msg)
			}
			if clientErr == nil {
				clientErr = rw.Flush()
			}
			res.CutShort = true
			return res, errors.Join(fmt.Errorf("bridge: %w: %s", ErrAborted, msg), clientErr)
		default:
			return w.desync(ctx, rw, res, fmt.Sprintf("unknown frame %q", h.kind))
		}
	}
}

// ended stops request id when its context ends, unless its client left
// after its whole response had reached it: a web server closes the
// connection as soon as it has the Content-Length it was promised, while
// the app may still be in its iterable's close(), which is then no longer
// the client's business, and stopping it would make a request that was
// served look abandoned (and cost a traceback). Such a request still ends
// by its deadline.
func (w *Worker) ended(ctx context.Context, id uint16) {
	if clientLeft(ctx) {
		w.mu.Lock()
		answered := w.current == id && w.answered
		if d, ok := ctx.Deadline(); ok && answered {
			w.late = time.AfterFunc(time.Until(d), func() { w.stopRequest(id) })
		}
		w.mu.Unlock()
		if answered {
			return
		}
	}
	w.stopRequest(id)
}

// contentLength returns the Content-Length in a CGI header block, -1 if
// it has none.
func contentLength(block []byte) int64 {
	for line := range bytes.SplitSeq(block, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(": "))
		if ok && bytes.EqualFold(name, []byte("Content-Length")) {
			if n, err := strconv.ParseInt(string(value), 10, 64); err == nil && n >= 0 {
				return n
			}
			return -1
		}
	}
	return -1
}

// stopAgain is how often a stopped request that goes on is signalled
// again: CPython handles a signal that lands just before a blocking call
// (a sleep, a read) only when the call returns, and a second one
// interrupts the call. The worker raises Stop once per request.
const stopAgain = 100 * time.Millisecond

// stopRequest asks the worker to stop request id, again every stopAgain,
// and kills it after StopGrace in case the app cannot be interrupted.
// It does nothing more once id has ended.
func (w *Worker) stopRequest(id uint16) {
	deadline := time.Now().Add(w.cfg.StopGrace)
	var signal func()
	signal = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.current != id {
			return
		}
		w.stopping = true
		select {
		case <-w.exited:
			return // its pid may be another process's now
		default:
		}
		if !time.Now().Before(deadline) {
			if w.stacks == nil {
				w.Kill()
				return
			}
			go func() {
				// Where the app is stuck, first; the lock is not held
				// meanwhile, and the request may end meanwhile.
				stack := w.stuckStack()
				w.mu.Lock()
				defer w.mu.Unlock()
				if w.current == id {
					w.log.Error("the app did not stop; killing its worker", "grace", w.cfg.StopGrace, "stack", stack)
					w.Kill()
				}
			}()
			return
		}
		_ = syscall.Kill(w.pid, syscall.SIGUSR1)
		time.AfterFunc(min(stopAgain, time.Until(deadline)), signal)
	}
	signal()
}

func (w *Worker) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping
}

// stoppedResult ends a stopped request that the worker ended in time: the
// worker serves on; the client gets 504 if it got nothing yet, unless it
// left (see clientLeft). where is where the app was, as the worker saw it.
func (w *Worker) stoppedResult(ctx context.Context, rw ResponseWriter, res Result, where []byte) (Result, error) {
	err := fmt.Errorf("bridge: %w (%v); worker pid %d stopped the app", ErrStopped, context.Cause(ctx), w.pid)
	if len(where) > 0 {
		err = fmt.Errorf("%w in:\n%s", err, where)
	}
	return w.endStopped(ctx, rw, res, err, 504)
}

// failed handles a worker that stopped answering: killed after a stop
// (504) or dead by itself (502).
func (w *Worker) failed(ctx context.Context, rw ResponseWriter, res Result, cause error) (Result, error) {
	w.Kill()
	if ctx.Err() != nil {
		return w.endStopped(ctx, rw, res, fmt.Errorf("bridge: %w (%v); worker pid %d killed", ErrStopped, context.Cause(ctx), w.pid), 504)
	}
	return w.endStopped(ctx, rw, res, fmt.Errorf("bridge: %w: worker pid %d %s during the request (%v)", ErrWorkerDied, w.pid, w.exitStatus(), cause), 502)
}

// endStopped gives a request that did not end well its status: 499 when
// the client left, else status, which the client gets if nothing was sent
// yet. A response already under way is cut short.
func (w *Worker) endStopped(ctx context.Context, rw ResponseWriter, res Result, err error, status int) (Result, error) {
	res.CutShort = res.Status != 0
	switch {
	case clientLeft(ctx):
		res.Status = StatusClientLeft
	case res.Status == 0:
		res.Status = status
		err = errors.Join(err, WriteError(rw, status))
	}
	return res, err
}

// StatusClientLeft is the status of a request whose client went away
// before it ended, as nginx logs it.
const StatusClientLeft = 499

// clientLeft tells a request stopped because its client went away: its
// context was canceled without a cause, as net/http cancels a request's
// when the connection closes. Deadlines and the bridge's own stops carry
// a cause.
func clientLeft(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled) && context.Cause(ctx) == context.Canceled
}

// desync handles a worker that broke the protocol: it is killed.
func (w *Worker) desync(ctx context.Context, rw ResponseWriter, res Result, what string) (Result, error) {
	return w.failed(ctx, rw, res, fmt.Errorf("%w: %s", errProtocol, what))
}

func putSize(frame []byte, n int) {
	frame[4], frame[5], frame[6], frame[7] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// parseStatus reads the code from a block that starts "Status: NNN"; a
// block without a Status line is a 200, CGI's default (the worker leaves
// it out for a 200 without a Location).
func parseStatus(block []byte) (int, bool) {
	const prefix = "Status: "
	if !bytes.HasPrefix(block, []byte(prefix)) {
		if len(block) < 2 || bytes.HasPrefix(block, []byte("Status:")) {
			return 0, false
		}
		return 200, true
	}
	if len(block) < len(prefix)+3 {
		return 0, false
	}
	code, err := strconv.Atoi(string(block[len(prefix) : len(prefix)+3]))
	if err != nil || code < 100 {
		return 0, false
	}
	return code, true
}

// bodySender streams a request body to the worker as B frames and ends
// it with one E frame, from its own goroutine, so that the response is
// read while the body is still being sent.
type bodySender struct {
	w    *Worker
	id   uint16
	body io.Reader
	env  []Var // for the log line when the body breaks
	// Guarded by w.wmu; run reads them without it, as their only writer.
	remaining int64 // -1: until EOF
	sent      int64
	ended     bool   // E was sent
	broken    string // why the body broke off; "" while it is whole
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, headerLen+bodyChunk); return &b }}

func (s *bodySender) run() {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for s.remaining != 0 {
		n := len(buf) - headerLen
		if s.remaining > 0 && s.remaining < int64(n) {
			n = int(s.remaining)
		}
		n, rerr := s.body.Read(buf[headerLen : headerLen+n])
		if n > 0 {
			appendHeader(buf[:0], frameBody, 0, s.id, n)
			if !s.send(buf[:headerLen+n], n) {
				return
			}
		}
		if rerr != nil {
			s.breakOff(rerr)
			break
		}
	}
	s.end(false)
}

// breakOff records why the body ended at err, unless it ended whole.
// end, on the Serve side, reads s.broken under the same lock.
func (s *bodySender) breakOff(err error) {
	var why string
	switch {
	case err == io.EOF && s.remaining <= 0:
		return
	case err == io.EOF:
		// A source that just ends (a CGI request's stdin).
		why = fmt.Sprintf("the body ended after %d of its CONTENT_LENGTH %d bytes", s.sent, s.sent+s.remaining)
	case errors.Is(err, io.ErrUnexpectedEOF):
		if s.remaining > 0 {
			why = fmt.Sprintf("the client sent %d of its CONTENT_LENGTH %d bytes and went away", s.sent, s.sent+s.remaining)
		} else {
			why = fmt.Sprintf("the client sent %d bytes of a chunked body and went away before its last chunk", s.sent)
		}
	default:
		why = fmt.Sprintf("reading the body failed after %d bytes: %v", s.sent, err)
	}
	s.w.wmu.Lock()
	s.broken = why
	answered := s.ended
	s.w.wmu.Unlock()
	if answered {
		return // the app answered without reading this far: no harm to tell
	}
	s.w.log.Warn("request body broke off",
		"request", lookup(s.env, "REQUEST_METHOD")+" "+lookup(s.env, "REQUEST_URI"), "why", why)
}

// send writes one frame of n body bytes unless the body was ended; false
// means stop. The counters change under the lock, as end reads them.
func (s *bodySender) send(frame []byte, n int) bool {
	s.w.wmu.Lock()
	defer s.w.wmu.Unlock()
	if s.ended {
		return false
	}
	if _, err := s.w.toPy.Write(frame); err != nil {
		s.ended = true
		return false
	}
	s.sent += int64(n)
	if s.remaining > 0 {
		s.remaining -= int64(n)
	}
	return true
}

// end sends the E frame once; called by run when the body ends (cut:
// false) and when Serve returns (cut: true), whichever is first. A body
// that Serve's return cuts short is marked broken too; no read of the
// app's reaches it, as the app has returned.
func (s *bodySender) end(cut bool) {
	s.w.wmu.Lock()
	defer s.w.wmu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	why := s.broken
	if why == "" && cut {
		why = "the response ended before the body did"
	}
	var flags byte
	if why != "" {
		flags = flagBroken
	}
	frame := appendHeader(make([]byte, 0, headerLen+len(why)), frameBodyEnd, flags, s.id, len(why))
	_, _ = s.w.toPy.Write(append(frame, why...))
}

// WriteError writes a short error response with the given status.
func WriteError(rw ResponseWriter, status int) error {
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	body := text + "\n"
	block := "Status: " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	if err := rw.WriteHeader(status, []byte(block)); err != nil {
		return err
	}
	if _, err := rw.Write([]byte(body)); err != nil {
		return err
	}
	return rw.Flush()
}

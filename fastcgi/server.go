package fastcgi

// This file holds the responder role: a Server accepts connections, reads
// records on each in one goroutine, and serves each request in its own
// goroutine, so several requests can share a connection.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgibridge/wsgibridge/internal/spool"
)

// Param is one CGI meta-variable from a request's PARAMS stream.
type Param struct {
	Name, Value string
}

// Request is one request whose params have all arrived.
type Request struct {
	// ID is the request id on its connection.
	ID uint16
	// Params holds the CGI meta-variables, in the order they came.
	Params []Param
	// Body is the request's FCGI_STDIN stream. It ends with io.EOF at the
	// empty STDIN record, or with an error if the connection fails.
	Body io.Reader
	// RemoteAddr is the web server's address on this connection.
	RemoteAddr string
}

// Handler serves requests. ServeFastCGI runs in its own goroutine; ctx is
// canceled when the web server aborts the request or the connection fails.
type Handler interface {
	ServeFastCGI(ctx context.Context, w *ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w *ResponseWriter, r *Request)

// ServeFastCGI calls f.
func (f HandlerFunc) ServeFastCGI(ctx context.Context, w *ResponseWriter, r *Request) { f(ctx, w, r) }

// Errors a request's context can be canceled with (see context.Cause).
var (
	// ErrAbortRequested: the web server sent FCGI_ABORT_REQUEST.
	ErrAbortRequested = errors.New("fastcgi: the web server aborted the request")
	// ErrConnClosed: the connection ended before the response did.
	ErrConnClosed = errors.New("fastcgi: connection closed")
	// ErrServerClosed is returned by Serve after Shutdown.
	ErrServerClosed = errors.New("fastcgi: server closed")
)

var errProtocol = errors.New("fastcgi: protocol error")

// Server is a FastCGI responder. Set its fields before Serve; zero values
// take the defaults listed with each field.
type Server struct {
	// Handler serves the requests.
	Handler Handler
	// Logger receives connection-level events; nil means slog.Default().
	Logger *slog.Logger
	// MaxConns caps the open connections (reported as FCGI_MAX_CONNS);
	// further ones wait in the listen backlog. Default 1024.
	MaxConns int
	// MaxRequests caps the requests in progress over all connections
	// (reported as FCGI_MAX_REQS); a BEGIN_REQUEST beyond it is answered
	// with END_REQUEST status FCGI_OVERLOADED. Default 1024.
	MaxRequests int
	// MaxParamsBytes caps one request's PARAMS stream. Default 256 KiB.
	MaxParamsBytes int
	// MaxParams caps the number of params of one request. Default 1000.
	MaxParams int
	// StdinMemory is how much of a request body that the handler has
	// not read yet is held in memory; the rest waits in a temporary file
	// in SpoolDir (os.TempDir() if empty), so a slow reader never stalls
	// its connection. Default 1 MiB.
	StdinMemory int
	SpoolDir    string
	// StdinMemoryTotal is how much of all the requests' bodies may wait
	// in memory together; beyond it they wait in temporary files, so that
	// many uploads at once cannot exhaust memory. Default 16 MiB.
	StdinMemoryTotal int
	// FirstByteTimeout limits how long a new connection may stay silent.
	// Default 10 s.
	FirstByteTimeout time.Duration
	// ParamsTimeout limits the time from BEGIN_REQUEST to the last
	// PARAMS record. Default 30 s.
	ParamsTimeout time.Duration
	// StdinTimeout limits the silence between STDIN records of a request
	// whose body has not ended. Default 60 s.
	StdinTimeout time.Duration
	// IdleTimeout limits how long a kept connection may wait for its next
	// request. Default 75 s.
	IdleTimeout time.Duration
	// AllowedAddrs, when not empty, lists the only addresses a TCP
	// connection may come from (FCGI_WEB_SERVER_ADDRS, section 3.2 of the
	// spec); others are closed at once and logged. Unix sockets are
	// guarded by their file mode instead.
	AllowedAddrs []netip.Addr

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*conn]struct{}
	connWG     sync.WaitGroup
	inShutdown atomic.Bool
	active     atomic.Int64
	slots      chan struct{}
	budget     *spool.Budget
	initOnce   sync.Once
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.Default()
		}
		setDefault(&s.MaxConns, 1024)
		setDefault(&s.MaxRequests, 1024)
		setDefault(&s.MaxParamsBytes, 256<<10)
		setDefault(&s.MaxParams, 1000)
		setDefault(&s.StdinMemory, 1<<20)
		setDefault(&s.StdinMemoryTotal, 16<<20)
		s.budget = spool.NewBudget(int64(s.StdinMemoryTotal))
		setDefault(&s.FirstByteTimeout, 10*time.Second)
		setDefault(&s.ParamsTimeout, 30*time.Second)
		setDefault(&s.StdinTimeout, 60*time.Second)
		setDefault(&s.IdleTimeout, 75*time.Second)
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.slots = make(chan struct{}, s.MaxConns)
	})
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Serve accepts connections on l until Shutdown, and returns
// ErrServerClosed then. Accept errors (too many open files, say) are
// logged and retried with a back-off; they never stop the server.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		// A slot is taken before Accept, so connections over MaxConns
		// wait in the kernel's backlog instead of costing a goroutine.
		s.slots <- struct{}{}
		nc, err := l.Accept()
		if err != nil {
			<-s.slots
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Logger.Warn("fastcgi: accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.allowed(nc) {
			s.Logger.Warn("fastcgi: connection refused: its address is not in FCGI_WEB_SERVER_ADDRS", "peer", nc.RemoteAddr().String())
			nc.Close()
			<-s.slots
			continue
		}
		c := s.newConn(nc)
		if c == nil {
			<-s.slots
			continue
		}
		go c.serve()
	}
}

// allowed reports whether a connection may be served (AllowedAddrs).
func (s *Server) allowed(nc net.Conn) bool {
	tcp, ok := nc.RemoteAddr().(*net.TCPAddr)
	if len(s.AllowedAddrs) == 0 || !ok {
		return true
	}
	addr, _ := netip.AddrFromSlice(tcp.IP)
	addr = addr.Unmap()
	for _, a := range s.AllowedAddrs {
		if a.Unmap() == addr {
			return true
		}
	}
	return false
}

// ParseAddrs parses FCGI_WEB_SERVER_ADDRS: IP addresses separated by
// commas.
func ParseAddrs(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("fastcgi: FCGI_WEB_SERVER_ADDRS: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		nc.Close()
		return nil
	}
	c := &conn{
		srv:  s,
		nc:   nc,
		rr:   newRecordReader(nc),
		reqs: map[uint16]*request{},
		log:  s.Logger.With("peer", nc.RemoteAddr().String()),
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return c
}

// Shutdown stops accepting, lets the requests in progress finish, closes
// idle connections, and returns when every connection is gone; if ctx ends
// first, it closes the remaining connections (canceling their requests)
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.inShutdown.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Active returns the number of requests in progress.
func (s *Server) Active() int { return int(s.active.Load()) }

// conn is one connection from the web server.
type conn struct {
	srv    *Server
	nc     net.Conn
	rr     *recordReader
	log    *slog.Logger
	ctx    context.Context // canceled when the connection ends
	cancel context.CancelCauseFunc

	wmu sync.Mutex // serialises writes to nc
	mu  sync.Mutex // guards reqs and served
	// reqs holds the requests from BEGIN_REQUEST until just before their
	// END_REQUEST is written, so an id is free again when the web server
	// learns it is.
	reqs   map[uint16]*request
	served int
	wg     sync.WaitGroup // the request goroutines
}

type request struct {
	id       uint16
	keepConn bool
	begun    time.Time
	params   []byte
	started  bool // the handler runs: params are complete
	body     *spool.Spool
	ctx      context.Context
	cancel   context.CancelCauseFunc
}

func (c *conn) serve() {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("fastcgi: panic reading connection; closing it", "panic", p, "stack", string(debug.Stack()))
		}
		c.nc.Close()
		c.cancel(ErrConnClosed)
		c.mu.Lock()
		var unstarted []*request
		for _, r := range c.reqs {
			if r.started {
				r.body.CloseWrite(ErrConnClosed)
			} else {
				unstarted = append(unstarted, r)
			}
		}
		c.mu.Unlock()
		for _, r := range unstarted {
			c.forget(r)
		}
		c.wg.Wait()
		c.rr.release()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
		<-c.srv.slots
		c.srv.connWG.Done()
	}()
	for {
		phase := c.setReadDeadline()
		h, content, err := c.rr.next()
		if err != nil {
			c.readFailed(err, phase)
			return
		}
		if err := c.handleRecord(h, content); err != nil {
			if !errors.Is(err, errConnDone) {
				c.log.Warn("fastcgi: closing connection", "err", err)
			}
			return
		}
	}
}

func (c *conn) readFailed(err error, phase string) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.As(err, &ne) && ne.Timeout():
		c.log.Info("fastcgi: closing silent connection", "waiting_for", phase)
	default:
		c.log.Warn("fastcgi: closing connection", "err", err)
	}
}

// setReadDeadline sets the deadline of the next read from what the
// connection waits for, and names it.
func (c *conn) setReadDeadline() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var deadline time.Time
	phase := ""
	if len(c.reqs) == 0 {
		if c.served == 0 {
			deadline, phase = now.Add(c.srv.FirstByteTimeout), "first record"
		} else {
			deadline, phase = now.Add(c.srv.IdleTimeout), "next request"
		}
	}
	for _, r := range c.reqs {
		var d time.Time
		var p string
		switch {
		case !r.started:
			d, p = r.begun.Add(c.srv.ParamsTimeout), "params"
		case r.body != nil:
			if ended, _ := r.body.Ended(); !ended {
				d, p = now.Add(c.srv.StdinTimeout), "stdin"
			}
		}
		if !d.IsZero() && (deadline.IsZero() || d.Before(deadline)) {
			deadline, phase = d, p
		}
	}
	_ = c.nc.SetReadDeadline(deadline)
	return phase
}

// handleRecord acts on one record; an error closes the connection.
func (c *conn) handleRecord(h header, content []byte) error {
	if h.id == 0 {
		return c.handleManagement(h, content)
	}
	c.mu.Lock()
	r := c.reqs[h.id]
	c.mu.Unlock()
	switch h.typ {
	case typeBeginRequest:
		return c.begin(h.id, content)
	case typeParams:
		if r == nil {
			return nil // a request we ended already: ignored (spec 3.3)
		}
		if r.started {
			return fmt.Errorf("%w: PARAMS after the end of params of request %d", errProtocol, h.id)
		}
		if len(content) == 0 {
			return c.start(r)
		}
		if len(r.params)+len(content) > c.srv.MaxParamsBytes {
			return fmt.Errorf("%w: params of request %d exceed %d bytes", errProtocol, h.id, c.srv.MaxParamsBytes)
		}
		r.params = append(r.params, content...)
	case typeStdin:
		if r == nil {
			return nil
		}
		if !r.started {
			return fmt.Errorf("%w: STDIN before the end of params of request %d", errProtocol, h.id)
		}
		if ended, _ := r.body.Ended(); ended {
			return nil // after its end, or after an abort: dropped
		}
		if len(content) == 0 {
			r.body.CloseWrite(nil)
			return nil
		}
		if _, err := r.body.Write(content); err != nil {
			r.cancel(err)
		}
	case typeAbortRequest:
		if r == nil {
			return nil
		}
		if !r.started {
			c.end(r, statusRequestComplete)
			return nil
		}
		r.cancel(ErrAbortRequested)
		r.body.CloseWrite(ErrAbortRequested)
	case typeData:
		// Only the filter role reads FCGI_DATA; a responder ignores it.
	default:
		return c.write(appendRecord(nil, typeUnknownType, 0, []byte{h.typ, 0, 0, 0, 0, 0, 0, 0}))
	}
	return nil
}

func (c *conn) handleManagement(h header, content []byte) error {
	if h.typ != typeGetValues {
		return c.write(appendRecord(nil, typeUnknownType, 0, []byte{h.typ, 0, 0, 0, 0, 0, 0, 0}))
	}
	var reply []byte
	err := decodePairs(content, func(name, _ []byte) error {
		var v int
		switch string(name) {
		case "FCGI_MAX_CONNS":
			v = c.srv.MaxConns
		case "FCGI_MAX_REQS":
			v = c.srv.MaxRequests
		case "FCGI_MPXS_CONNS":
			v = 1
		default:
			return nil
		}
		reply = appendPair(reply, string(name), strconv.Itoa(v))
		return nil
	})
	if err != nil {
		return err
	}
	return c.write(appendRecord(nil, typeGetValuesResult, 0, reply))
}

func (c *conn) begin(id uint16, content []byte) error {
	if len(content) != 8 {
		return fmt.Errorf("%w: BEGIN_REQUEST body of %d bytes", errProtocol, len(content))
	}
	c.mu.Lock()
	_, active := c.reqs[id]
	c.mu.Unlock()
	if active {
		// Never let a second BEGIN_REQUEST replace a live request: that
		// is how smuggled records take over a connection.
		return fmt.Errorf("%w: BEGIN_REQUEST for request %d, which is in progress", errProtocol, id)
	}
	keep := content[2]&flagKeepConn != 0
	r := &request{id: id, keepConn: keep, begun: time.Now()}
	if role := binary.BigEndian.Uint16(content[:2]); role != roleResponder {
		return c.refuse(r, statusUnknownRole)
	}
	if c.srv.inShutdown.Load() {
		return c.refuse(r, statusOverloaded)
	}
	if c.srv.active.Add(1) > int64(c.srv.MaxRequests) {
		c.srv.active.Add(-1)
		c.log.Warn("fastcgi: refusing a request: at capacity", "max_requests", c.srv.MaxRequests)
		return c.refuse(r, statusOverloaded)
	}
	r.ctx, r.cancel = context.WithCancelCause(c.ctx)
	c.mu.Lock()
	c.reqs[id] = r
	c.mu.Unlock()
	return nil
}

// refuse ends a request that never became active.
func (c *conn) refuse(r *request, status uint8) error {
	if err := c.write(appendEndRequest(nil, r.id, 0, status)); err != nil {
		return err
	}
	if !r.keepConn {
		return errConnDone
	}
	return nil
}

var errConnDone = errors.New("fastcgi: request done and FCGI_KEEP_CONN not set")

// start decodes the params and runs the handler.
func (c *conn) start(r *request) error {
	var params []Param
	err := decodePairs(r.params, func(name, value []byte) error {
		if len(params) >= c.srv.MaxParams {
			return fmt.Errorf("%w: more than %d params in request %d", errProtocol, c.srv.MaxParams, r.id)
		}
		params = append(params, Param{string(name), string(value)})
		return nil
	})
	if err != nil {
		return err
	}
	r.params = nil
	r.body = spool.New(c.srv.StdinMemory, c.srv.SpoolDir, c.srv.budget)
	c.mu.Lock()
	r.started = true
	c.mu.Unlock()
	req := &Request{ID: r.id, Params: params, Body: r.body, RemoteAddr: c.nc.RemoteAddr().String()}
	c.wg.Add(1)
	go c.run(r, req)
	return nil
}

func (c *conn) run(r *request, req *Request) {
	defer c.wg.Done()
	w := &ResponseWriter{c: c, id: r.id, ctx: r.ctx, stdinDone: r.body.Done()}
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("fastcgi: panic serving a request", "panic", p, "stack", string(debug.Stack()))
				w.Abort()
			}
		}()
		c.srv.Handler.ServeFastCGI(r.ctx, w, req)
	}()
	r.body.Close()
	if w.aborted {
		// No END_REQUEST: closing the connection is how a web server
		// learns that a response is incomplete.
		c.nc.Close()
		c.forget(r)
		r.cancel(ErrConnClosed)
		return
	}
	c.end(r, statusRequestComplete, w.out...)
	r.cancel(nil)
}

// end writes what remains of a request's output, its empty STDOUT and its
// END_REQUEST, once, and closes the connection unless it is kept.
func (c *conn) end(r *request, status uint8, pending ...byte) {
	idle, ok := c.forget(r)
	if !ok {
		return
	}
	out := appendRecord(pending, typeStdout, r.id, nil)
	out = appendEndRequest(out, r.id, 0, status)
	if err := c.write(out); err != nil || !r.keepConn || (idle && c.srv.inShutdown.Load()) {
		c.nc.Close()
		return
	}
	if idle {
		// The reader may be blocked with no deadline (it had nothing to
		// wait for while the request ran): give it the idle one.
		_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.IdleTimeout))
	}
}

// forget removes a request and releases its place among the requests in
// progress, once; it reports whether the connection is now idle, and
// whether the request was still there.
func (c *conn) forget(r *request) (idle, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reqs[r.id] != r {
		return len(c.reqs) == 0, false
	}
	delete(c.reqs, r.id)
	c.served++
	c.srv.active.Add(-1)
	return len(c.reqs) == 0, true
}

func (c *conn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		c.nc.Close()
	}
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// ResponseWriter writes a response as FCGI_STDOUT records. Output is held
// until Flush, 64 KiB of it, or the end of the request, so a small response
// leaves in one write with its END_REQUEST.
//
// Output also waits for the end of the request's STDIN: nginx stops sending
// a request body once the response has begun (observed with nginx 1.22), so
// an app that answers while it reads (an echo, an upload with progress)
// would wait forever for the rest. The body keeps arriving meanwhile (the
// connection's reader spools it), so the wait ends as soon as the web
// server has sent it all.
type ResponseWriter struct {
	c         *conn
	id        uint16
	ctx       context.Context
	stdinDone <-chan struct{}
	out       []byte
	aborted   bool
}

// Write writes response bytes: the CGI header block first, then the body.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	if w.aborted {
		return 0, ErrConnClosed
	}
	w.out = appendStream(w.out, typeStdout, w.id, p)
	if len(w.out) >= 64<<10 {
		return len(p), w.Flush()
	}
	return len(p), nil
}

// Flush sends the output held so far, once the request's STDIN has ended.
func (w *ResponseWriter) Flush() error {
	if len(w.out) == 0 {
		return nil
	}
	select {
	case <-w.stdinDone:
	case <-w.ctx.Done():
		return context.Cause(w.ctx)
	}
	err := w.c.write(w.out)
	w.out = w.out[:0]
	return err
}

// Abort marks the response as failed after output was sent: instead of
// END_REQUEST the connection is closed, which the web server reports as an
// upstream failure and which (with nginx's fastcgi_keep_conn on) the client
// sees as a truncated response rather than a complete one. Other requests
// on the same connection are canceled with it.
func (w *ResponseWriter) Abort() {
	w.aborted = true
}

// Package bridge runs WSGI applications in Python worker processes. It
// owns the request model (a CGI environ and a body: request.go), the
// frame protocol between Go and a worker (protocol.go) and the worker
// program itself (the Python package in wsgibridge/, sent to each worker
// by python.go), one worker's life (worker.go) and how it serves a
// request sent over the frames (serve.go) or serves FastCGI itself
// (fastcgiworker.go), and the pool: its workers' slots (slot.go), the
// board the FastCGI workers share with it (board.go), the queue of
// requests waiting for a worker (queue.go), the copies of the
// connections the FastCGI workers keep, so that a worker's death takes
// only the request it ran (keeper.go), and the fork servers the workers
// of a preloading pool are forked from (forker.go, orphans.go).
package bridge

package status

// This file holds the status document: what /status serves as JSON, and
// what /metrics and the page show.

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/fastcgi"
)

// Document is the pool's status at one moment.
type Document struct {
	Version       string            `json:"version"`
	App           string            `json:"app"`
	Mode          string            `json:"mode"`
	Started       time.Time         `json:"started"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Workers       Workers           `json:"workers"`
	Requests      Requests          `json:"requests"`
	ListenQueue   *ListenQueue      `json:"listen_queue,omitempty"`
	WorkerExits   map[string]uint64 `json:"worker_exits"`
	Reloads       Reloads           `json:"reloads"`
	// Degraded is the crash storm the pool is in, null when none.
	Degraded *Degraded `json:"degraded"`
	// ForkServers, under --preload: the pids of the processes the
	// workers are forked from.
	ForkServers []int `json:"fork_servers,omitempty"`
	// Rows, with ?full: a row per worker.
	Rows []Row `json:"worker_rows,omitempty"`

	durations [13]uint64 // by bridge.DurationBuckets, for the metrics
	duration  time.Duration
}

// Degraded is a crash storm: workers die young one after another.
type Degraded struct {
	Since  time.Time `json:"since"`
	Deaths int       `json:"deaths"`
	Last   string    `json:"last"`
}

// Workers counts the pool's workers: Min and Max are its bounds (equal
// for a fixed pool), Size how many it keeps now.
type Workers struct {
	Min      int `json:"min"`
	Max      int `json:"max"`
	Size     int `json:"size"`
	Alive    int `json:"alive"`
	Busy     int `json:"busy"`
	Idle     int `json:"idle"`
	Starting int `json:"starting"`
}

// Requests counts what the pool answered.
type Requests struct {
	// Served counts the requests the workers took, the running ones
	// included; ByStatus counts them once answered.
	Served     uint64 `json:"served"`
	InProgress int    `json:"in_progress"`
	// Waiting are those waiting for a worker inside the daemon (the http
	// mode's queue); FastCGI requests wait in the listen queue.
	Waiting int    `json:"waiting"`
	Slow    uint64 `json:"slow"`
	Refused uint64 `json:"refused"`
	// ByStatus counts them by status class ("2xx"); 499: the client left.
	ByStatus map[string]uint64 `json:"by_status"`
}

// ListenQueue is the socket's accept queue: connections waiting now, the
// most seen waiting, and how many may.
type ListenQueue struct {
	Now     int `json:"now"`
	Max     int `json:"max"`
	Backlog int `json:"backlog"`
}

// Reloads counts the reloads; Last is the time of the last.
type Reloads struct {
	Count uint64     `json:"count"`
	Last  *time.Time `json:"last"`
}

// Row is one worker.
type Row struct {
	Pid      int       `json:"pid"`
	State    string    `json:"state"` // idle, busy
	Served   uint64    `json:"served"`
	Started  time.Time `json:"started"`
	RSSBytes int64     `json:"rss_bytes"`
	// The request it runs, when busy: its method and path (the query and
	// every header left out) and how long it has run; a FastCGI worker
	// tells them once the request has run 20 ms.
	Request        string   `json:"request,omitempty"`
	ElapsedSeconds *float64 `json:"elapsed_seconds,omitempty"`
}

var statusClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Document returns the pool's status now; full adds the rows.
func (s *Server) Document(full bool) Document {
	st := s.cfg.Pool.Status()
	now := time.Now()
	d := Document{
		Version: s.cfg.Version, App: s.cfg.App, Mode: s.cfg.Mode,
		Started: s.cfg.Started.UTC(), UptimeSeconds: now.Sub(s.cfg.Started).Seconds(),
		Workers: Workers{Min: st.Workers.Min, Max: st.Workers.Max, Size: st.Size, Alive: st.Alive, Busy: st.Busy,
			Idle: st.Idle, Starting: st.Starting},
		Requests: Requests{Served: st.Served, InProgress: st.InProgress, Waiting: st.Waiting, Refused: st.Refused,
			ByStatus: map[string]uint64{}},
		WorkerExits: map[string]uint64{},
		Degraded:    degradedOf(st.Degraded),
		Reloads:     Reloads{Count: st.Reloads},
		ForkServers: st.ForkServers,
		durations:   st.Buckets,
		duration:    st.Duration,
	}
	for i, class := range statusClasses {
		d.Requests.ByStatus[class] = st.Classes[i]
	}
	for _, cause := range bridge.ExitCauses {
		d.WorkerExits[cause] = st.Exits[cause]
	}
	if s.cfg.Slow != nil {
		d.Requests.Slow = s.cfg.Slow()
	}
	if !st.LastReload.IsZero() {
		last := st.LastReload.UTC()
		d.Reloads.Last = &last
	}
	if s.cfg.Listener != nil {
		if now, backlog, err := s.queue(); err == nil {
			d.ListenQueue = &ListenQueue{Now: now, Max: int(s.queueMax.Load()), Backlog: backlog}
		}
	}
	if full {
		for _, w := range st.Rows {
			row := Row{Pid: w.Pid, State: "idle", Served: w.Served, Started: w.Started.UTC(), RSSBytes: w.RSS}
			if w.Busy {
				row.State = "busy"
				row.Request = w.Request
				if !w.Since.IsZero() {
					e := now.Sub(w.Since).Seconds()
					row.ElapsedSeconds = &e
				}
			}
			d.Rows = append(d.Rows, row)
		}
	}
	return d
}

// JSON returns the Document as JSON.
func (s *Server) JSON(full bool) []byte {
	b, err := json.MarshalIndent(s.Document(full), "", "  ")
	if err != nil {
		s.log.Error("status: the document does not encode", "err", err)
		return []byte("{}\n")
	}
	return append(b, '\n')
}

// queue reads the listen queue, keeping the most seen.
func (s *Server) queue() (now, backlog int, err error) {
	raw, err := s.cfg.Listener.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := raw.Control(func(fd uintptr) { now, backlog, err = fastcgi.QueueLength(int(fd)) })
	if err = errors.Join(cerr, err); err != nil {
		return 0, 0, err
	}
	for {
		seen := s.queueMax.Load()
		if int64(now) <= seen || s.queueMax.CompareAndSwap(seen, int64(now)) {
			return now, backlog, nil
		}
	}
}

func degradedOf(d *bridge.Degraded) *Degraded {
	if d == nil {
		return nil
	}
	return &Degraded{Since: d.Since.UTC(), Deaths: d.Deaths, Last: d.Last}
}

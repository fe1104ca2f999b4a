package status

// This file renders the status as OpenMetrics text (the format
// Prometheus scrapes): a family per measure, named wsgibridge_*, units
// in the names, counters ending in _total, a cumulative histogram of
// request durations, and # EOF at the end.

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// OpenMetrics returns the status as OpenMetrics text.
func (s *Server) OpenMetrics() []byte {
	d := s.Document(false)
	var b bytes.Buffer
	family := func(name, kind, unit, help string) {
		fmt.Fprintf(&b, "# TYPE %s %s\n", name, kind)
		if unit != "" {
			fmt.Fprintf(&b, "# UNIT %s %s\n", name, unit)
		}
		fmt.Fprintf(&b, "# HELP %s %s\n", name, help)
	}
	family("wsgibridge_build", "info", "", "The daemon: its version, app and mode.")
	fmt.Fprintf(&b, "wsgibridge_build_info{version=%s,app=%s,mode=%s} 1\n", label(d.Version), label(d.App), label(d.Mode))
	family("wsgibridge_start_time_seconds", "gauge", "seconds", "When the daemon started, in seconds since the epoch.")
	fmt.Fprintf(&b, "wsgibridge_start_time_seconds %s\n", float(float64(d.Started.UnixMilli())/1000))

	family("wsgibridge_workers", "gauge", "", "Python worker processes, by state.")
	for _, st := range []struct {
		state string
		n     int
	}{{"busy", d.Workers.Busy}, {"idle", d.Workers.Idle}, {"starting", d.Workers.Starting}} {
		fmt.Fprintf(&b, "wsgibridge_workers{state=%q} %d\n", st.state, st.n)
	}
	family("wsgibridge_workers_size", "gauge", "", "Python worker processes the pool keeps now.")
	fmt.Fprintf(&b, "wsgibridge_workers_size %d\n", d.Workers.Size)
	family("wsgibridge_workers_min", "gauge", "", "The fewest worker processes the pool keeps.")
	fmt.Fprintf(&b, "wsgibridge_workers_min %d\n", d.Workers.Min)
	family("wsgibridge_workers_max", "gauge", "", "The most worker processes the pool keeps.")
	fmt.Fprintf(&b, "wsgibridge_workers_max %d\n", d.Workers.Max)

	family("wsgibridge_degraded", "gauge", "", "1 while workers keep dying young (a crash storm), else 0.")
	degraded := 0
	if d.Degraded != nil {
		degraded = 1
	}
	fmt.Fprintf(&b, "wsgibridge_degraded %d\n", degraded)

	family("wsgibridge_requests", "counter", "", "Requests answered, by status class (499: the client left).")
	for _, class := range statusClasses {
		fmt.Fprintf(&b, "wsgibridge_requests_total{class=%q} %d\n", class, d.Requests.ByStatus[class])
	}
	family("wsgibridge_requests_served", "counter", "", "Requests the workers took, the running ones included.")
	fmt.Fprintf(&b, "wsgibridge_requests_served_total %d\n", d.Requests.Served)
	family("wsgibridge_requests_in_progress", "gauge", "", "Requests running in the app now.")
	fmt.Fprintf(&b, "wsgibridge_requests_in_progress %d\n", d.Requests.InProgress)
	family("wsgibridge_requests_waiting", "gauge", "", "Requests waiting for a worker inside the daemon (the http mode's queue).")
	fmt.Fprintf(&b, "wsgibridge_requests_waiting %d\n", d.Requests.Waiting)
	family("wsgibridge_requests_slow", "counter", "", "Requests that ran longer than the slow log's threshold.")
	fmt.Fprintf(&b, "wsgibridge_requests_slow_total %d\n", d.Requests.Slow)
	family("wsgibridge_requests_refused", "counter", "", "Requests answered 503 because no worker could take them.")
	fmt.Fprintf(&b, "wsgibridge_requests_refused_total %d\n", d.Requests.Refused)

	family("wsgibridge_request_duration_seconds", "histogram", "seconds", "How long the requests ran.")
	var cumulative uint64
	for i, le := range bridge.DurationBuckets {
		cumulative += d.durations[i]
		fmt.Fprintf(&b, "wsgibridge_request_duration_seconds_bucket{le=%q} %d\n", canonical(le), cumulative)
	}
	cumulative += d.durations[len(bridge.DurationBuckets)]
	fmt.Fprintf(&b, "wsgibridge_request_duration_seconds_bucket{le=\"+Inf\"} %d\n", cumulative)
	fmt.Fprintf(&b, "wsgibridge_request_duration_seconds_count %d\n", cumulative)
	fmt.Fprintf(&b, "wsgibridge_request_duration_seconds_sum %s\n", float(d.duration.Seconds()))

	if q := d.ListenQueue; q != nil {
		family("wsgibridge_listen_queue_connections", "gauge", "connections", "Connections waiting to be accepted on the listening socket.")
		fmt.Fprintf(&b, "wsgibridge_listen_queue_connections %d\n", q.Now)
		family("wsgibridge_listen_queue_max_connections", "gauge", "connections", "The most connections seen waiting to be accepted.")
		fmt.Fprintf(&b, "wsgibridge_listen_queue_max_connections %d\n", q.Max)
		family("wsgibridge_listen_queue_backlog_connections", "gauge", "connections", "How many connections may wait to be accepted.")
		fmt.Fprintf(&b, "wsgibridge_listen_queue_backlog_connections %d\n", q.Backlog)
	}

	family("wsgibridge_worker_exits", "counter", "", "Workers gone, by cause.")
	for _, cause := range bridge.ExitCauses {
		fmt.Fprintf(&b, "wsgibridge_worker_exits_total{cause=%q} %d\n", cause, d.WorkerExits[cause])
	}
	family("wsgibridge_reloads", "counter", "", "Reloads that replaced the workers.")
	fmt.Fprintf(&b, "wsgibridge_reloads_total %d\n", d.Reloads.Count)
	if d.Reloads.Last != nil {
		family("wsgibridge_last_reload_time_seconds", "gauge", "seconds", "When the last reload was, in seconds since the epoch.")
		fmt.Fprintf(&b, "wsgibridge_last_reload_time_seconds %s\n", float(float64(d.Reloads.Last.UnixMilli())/1000))
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

// float writes a number as OpenMetrics has it.
func float(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// canonical writes a bucket's bound as OpenMetrics asks of "le" values
// (its Canonical Numbers): the shortest form, with a decimal point.
func canonical(f float64) string {
	s := float(f)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

// label quotes a label value: backslash, double quote and newline escaped.
func label(v string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range v {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

package status

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/bridge"
)

// fakePool is a Source that says what the test tells it.
type fakePool struct {
	status  bridge.Status
	running []bridge.Running
	stacks  map[int]string
}

func (f *fakePool) Status() bridge.Status     { return f.status }
func (f *fakePool) Running() []bridge.Running { return f.running }
func (f *fakePool) Stacks(pid int, wait time.Duration) (string, error) {
	if s, ok := f.stacks[pid]; ok {
		return s, nil
	}
	return "", bridge.ErrNoSuchWorker
}

var started = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func busyPool() *fakePool {
	since := time.Now().Add(-1500 * time.Millisecond)
	return &fakePool{
		status: bridge.Status{
			Workers: bridge.Size{Min: 2, Max: 2}, Size: 2, Alive: 2, Busy: 1, Idle: 1, Served: 42, InProgress: 1, Refused: 3,
			Exits:   map[string]uint64{bridge.ExitCrash: 1, bridge.ExitReload: 2},
			Reloads: 1, LastReload: started.Add(time.Hour),
			Classes:  [5]uint64{0, 38, 1, 2, 1},
			Buckets:  [13]uint64{30, 5, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1},
			Duration: 42 * time.Second,
			Rows: []bridge.WorkerStatus{
				{Pid: 101, Started: started, Served: 40, Busy: true, Request: "GET /report", Since: since},
				{Pid: 102, Started: started, Served: 2},
			},
		},
		running: []bridge.Running{{Pid: 101, Request: "GET /report", Since: since, Run: 41}},
		stacks: map[int]string{101: "Current thread 0x1 (most recent call first):\n" +
			"  File \"/srv/app.py\", line 9 in report\n  File \"/srv/app.py\", line 2 in application\n"},
	}
}

func newServer(t *testing.T, pool Source) *Server {
	s := New(Config{Pool: pool, Version: "1.2", App: "mysite.wsgi", Mode: "fastcgi", Started: started,
		Slow: func() uint64 { return 7 }})
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, s *Server, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

func TestStatusDocument(t *testing.T) {
	s := newServer(t, busyPool())
	rec := get(t, s, "/status?full")
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var d map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &d))
	assert.Equal(t, "mysite.wsgi", d["app"])
	assert.Equal(t, "fastcgi", d["mode"])
	assert.Equal(t, map[string]any{"min": 2.0, "max": 2.0, "size": 2.0, "alive": 2.0, "busy": 1.0, "idle": 1.0, "starting": 0.0}, d["workers"])
	req := d["requests"].(map[string]any)
	assert.Equal(t, 42.0, req["served"])
	assert.Equal(t, 7.0, req["slow"])
	assert.Equal(t, 3.0, req["refused"])
	assert.Equal(t, map[string]any{"1xx": 0.0, "2xx": 38.0, "3xx": 1.0, "4xx": 2.0, "5xx": 1.0}, req["by_status"])
	assert.Equal(t, map[string]any{"max-requests": 0.0, "reload": 2.0, "crash": 1.0, "timeout": 0.0, "shutdown": 0.0, "idle": 0.0, "max-rss": 0.0}, d["worker_exits"])
	rows := d["worker_rows"].([]any)
	require.Len(t, rows, 2)
	busy := rows[0].(map[string]any)
	assert.Equal(t, "busy", busy["state"])
	assert.Equal(t, "GET /report", busy["request"])
	assert.InDelta(t, 1.5, busy["elapsed_seconds"], 0.5)
	assert.NotContains(t, rows[1], "request", "an idle worker runs nothing")

	var short map[string]any
	require.NoError(t, json.Unmarshal(get(t, s, "/status").Body.Bytes(), &short))
	assert.NotContains(t, short, "worker_rows", "rows only with ?full")
}

func TestPing(t *testing.T) {
	pool := busyPool()
	s := newServer(t, pool)
	rec := get(t, s, "/ping")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "pong\n", rec.Body.String())
	pool.status.Busy, pool.status.Idle = 2, 0
	rec = get(t, s, "/ping")
	assert.Equal(t, 503, rec.Code, "no worker can take a request")

	pool.status.Workers, pool.status.Size = bridge.Size{Min: 0, Max: 4}, 2
	rec = get(t, s, "/ping")
	assert.Equal(t, 200, rec.Code, "busy, but the pool can grow")
	pool.status.Size, pool.status.Busy = 0, 0
	rec = get(t, s, "/ping")
	assert.Equal(t, 200, rec.Code, "an on-demand pool at rest starts a worker for the next request")

	pool.status.Degraded = &bridge.Degraded{Since: started, Deaths: 5, Last: "worker pid 9 exited with status 1"}
	rec = get(t, s, "/ping")
	assert.Equal(t, 503, rec.Code)
	assert.Equal(t, "degraded: workers keep dying young (5 since 2026-12-07T10:00:00Z); the last: worker pid 9 exited with status 1\n", rec.Body.String())
}

func TestDegraded(t *testing.T) {
	pool := busyPool()
	s := newServer(t, pool)
	var d map[string]any
	require.NoError(t, json.Unmarshal(get(t, s, "/status").Body.Bytes(), &d))
	assert.Nil(t, d["degraded"])
	assert.Contains(t, get(t, s, "/metrics").Body.String(), "\nwsgibridge_degraded 0\n")

	pool.status.Degraded = &bridge.Degraded{Since: started, Deaths: 3, Last: "boom"}
	require.NoError(t, json.Unmarshal(get(t, s, "/status").Body.Bytes(), &d))
	assert.Equal(t, map[string]any{"since": "2026-12-07T10:00:00Z", "deaths": 3.0, "last": "boom"}, d["degraded"])
	assert.Contains(t, get(t, s, "/metrics").Body.String(), "\nwsgibridge_degraded 1\n")
}

func TestStacks(t *testing.T) {
	s := newServer(t, busyPool())
	body := get(t, s, "/stacks").Body.String()
	assert.Contains(t, body, "pid 101: GET /report, running for 1.")
	assert.Contains(t, body, "(innermost last):\n  File \"/srv/app.py\", line 2 in application\n  File \"/srv/app.py\", line 9 in report")
	s = newServer(t, &fakePool{})
	assert.Equal(t, "no request runs\n", get(t, s, "/stacks").Body.String())
}

func TestPage(t *testing.T) {
	s := newServer(t, busyPool())
	rec := get(t, s, "/")
	assert.Equal(t, 200, rec.Code)
	assert.Contains(t, rec.Body.String(), `<meta http-equiv="refresh"`)
	assert.Contains(t, rec.Body.String(), "<td>GET /report</td>")
	assert.Equal(t, 404, get(t, s, "/nothing").Code)
}

// TestOpenMetrics checks /metrics against the rules of the OpenMetrics
// 1.0 text format that a scraper relies on (openMetrics says which).
func TestOpenMetrics(t *testing.T) {
	s := newServer(t, busyPool())
	rec := get(t, s, "/metrics")
	assert.Equal(t, "application/openmetrics-text; version=1.0.0; charset=utf-8", rec.Header().Get("Content-Type"))
	families, err := openMetrics(rec.Body.String())
	require.NoError(t, err, rec.Body.String())
	assert.Equal(t, "1", families["wsgibridge_build"]["wsgibridge_build_info{app=\"mysite.wsgi\",mode=\"fastcgi\",version=\"1.2\"}"])
	assert.Equal(t, "38", families["wsgibridge_requests"][`wsgibridge_requests_total{class="2xx"}`])
	assert.Equal(t, "1", families["wsgibridge_workers"][`wsgibridge_workers{state="busy"}`])
	assert.Equal(t, "7", families["wsgibridge_requests_slow"]["wsgibridge_requests_slow_total"])
	h := families["wsgibridge_request_duration_seconds"]
	assert.Equal(t, "30", h[`wsgibridge_request_duration_seconds_bucket{le="0.005"}`])
	assert.Equal(t, "41", h[`wsgibridge_request_duration_seconds_bucket{le="1.0"}`])
	assert.Equal(t, "42", h[`wsgibridge_request_duration_seconds_bucket{le="+Inf"}`])
	assert.Equal(t, "42", h["wsgibridge_request_duration_seconds_sum"])
	assert.Equal(t, "2", families["wsgibridge_worker_exits"][`wsgibridge_worker_exits_total{cause="reload"}`])
}

// openMetrics parses OpenMetrics text and checks these rules of the 1.0
// specification: every line is a # TYPE, # UNIT, # HELP or # EOF line or
// a sample; the text ends with "# EOF" and a newline; a family's TYPE
// comes first, once, with a known type; its samples follow it, without
// another family between, and are named for it with the suffixes its
// type allows (counter: _total; histogram: _bucket, _count, _sum; info:
// _info; gauge: none); a UNIT is the family name's last part; a sample
// appears once; label names are valid and their values quoted, with only
// \\, \" and \n escaped; values are numbers; a histogram's buckets have
// an "le" label in the canonical number form, ascending, ending with
// +Inf, cumulative, and its _count equals its +Inf bucket. It returns
// each family's samples, by name and labels (sorted), to their value.
func openMetrics(text string) (map[string]map[string]string, error) {
	if !strings.HasSuffix(text, "# EOF\n") {
		return nil, errors.New("the text does not end with # EOF and a newline")
	}
	families := map[string]map[string]string{}
	types := map[string]string{}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([^ ]+)$`)
	labelRE := regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"$`)
	suffixes := map[string][]string{"counter": {"_total"}, "gauge": {""}, "info": {"_info"},
		"histogram": {"_bucket", "_count", "_sum"}}
	var current string
	var le []float64
	var buckets []float64
	sc := bufio.NewScanner(strings.NewReader(strings.TrimSuffix(text, "# EOF\n")))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 {
				return nil, fmt.Errorf("line %d: %q", n, line)
			}
			switch f[1] {
			case "TYPE":
				if _, seen := types[f[2]]; seen {
					return nil, fmt.Errorf("line %d: family %s twice", n, f[2])
				}
				if _, ok := suffixes[f[3]]; !ok {
					return nil, fmt.Errorf("line %d: type %q", n, f[3])
				}
				current, types[f[2]], families[f[2]] = f[2], f[3], map[string]string{}
				le, buckets = nil, nil
			case "UNIT":
				if f[2] != current || !strings.HasSuffix(current, "_"+f[3]) {
					return nil, fmt.Errorf("line %d: unit %q for family %s", n, f[3], current)
				}
			case "HELP":
				if f[2] != current {
					return nil, fmt.Errorf("line %d: help for %s inside %s", n, f[2], current)
				}
			default:
				return nil, fmt.Errorf("line %d: %q", n, line)
			}
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil || current == "" {
			return nil, fmt.Errorf("line %d: not a sample of a family: %q", n, line)
		}
		name, labels, value := m[1], m[2], m[3]
		suffix, ok := strings.CutPrefix(name, current)
		if !ok || !contains(suffixes[types[current]], suffix) {
			return nil, fmt.Errorf("line %d: sample %s in family %s (%s)", n, name, current, types[current])
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: value %q", n, value)
		}
		var pairs []string
		var leValue string
		if labels != "" {
			for _, l := range splitLabels(labels[1 : len(labels)-1]) {
				lm := labelRE.FindStringSubmatch(l)
				if lm == nil {
					return nil, fmt.Errorf("line %d: label %q", n, l)
				}
				if lm[1] == "le" {
					leValue = lm[2]
				}
				pairs = append(pairs, l)
			}
		}
		sort.Strings(pairs)
		key := name
		if len(pairs) > 0 {
			key += "{" + strings.Join(pairs, ",") + "}"
		}
		if _, dup := families[current][key]; dup {
			return nil, fmt.Errorf("line %d: sample %s twice", n, key)
		}
		families[current][key] = value
		if types[current] == "histogram" {
			switch suffix {
			case "_bucket":
				bound, err := strconv.ParseFloat(leValue, 64)
				if err != nil || (leValue != "+Inf" && !strings.ContainsAny(leValue, ".e")) {
					return nil, fmt.Errorf("line %d: le %q is no canonical number", n, leValue)
				}
				if len(le) > 0 && (bound <= le[len(le)-1] || v < buckets[len(buckets)-1]) {
					return nil, fmt.Errorf("line %d: buckets out of order or not cumulative", n)
				}
				le, buckets = append(le, bound), append(buckets, v)
			case "_count":
				if len(le) == 0 || le[len(le)-1] <= 1e308 || v != buckets[len(buckets)-1] {
					return nil, fmt.Errorf("line %d: _count is not the +Inf bucket", n)
				}
			}
		}
	}
	return families, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitLabels splits name="value",... at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == ',' && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestListenRefusesPublic(t *testing.T) {
	_, err := Listen("0.0.0.0:0", false)
	assert.ErrorIs(t, err, ErrPublic)
	l, err := Listen("0.0.0.0:0", true)
	require.NoError(t, err)
	l.Close()
	l, err = Listen("127.0.0.1:0", false)
	require.NoError(t, err)
	l.Close()
	sock := filepath.Join(t.TempDir(), "status.sock")
	l, err = Listen("unix:"+sock, false)
	require.NoError(t, err)
	defer l.Close()
	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	c.Close()
}

var _ http.Handler = (*Server)(nil)

// TestOpenMetricsChecker: the checker above refuses text that breaks the
// rules it checks.
func TestOpenMetricsChecker(t *testing.T) {
	good := "# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n# HELP a_seconds h\n" +
		"a_seconds_bucket{le=\"0.5\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\na_seconds_count 2\na_seconds_sum 0.7\n" +
		"# TYPE b counter\n# HELP b h\nb_total{x=\"a\\\"b\"} 3\n# EOF\n"
	_, err := openMetrics(good)
	require.NoError(t, err)
	for name, broken := range map[string]string{
		"no EOF":                   strings.TrimSuffix(good, "# EOF\n"),
		"a counter without _total": strings.Replace(good, "b_total", "b", 1),
		"a sample of no family":    "c 1\n" + good,
		"a family twice":           strings.Replace(good, "# TYPE b counter", "# TYPE a_seconds counter", 1),
		"buckets not cumulative":   strings.Replace(good, "le=\"+Inf\"} 2", "le=\"+Inf\"} 0", 1),
		"an le not canonical":      strings.Replace(good, "0.5", "1", 1),
		"a count off":              strings.Replace(good, "a_seconds_count 2", "a_seconds_count 3", 1),
		"a unit not in the name":   strings.Replace(good, "# UNIT a_seconds seconds", "# UNIT a_seconds bytes", 1),
		"an unquoted label":        strings.Replace(good, `x="a\"b"`, `x=a`, 1),
		"a sample twice":           strings.Replace(good, "a_seconds_sum 0.7\n", "a_seconds_sum 0.7\na_seconds_sum 0.7\n", 1),
	} {
		_, err := openMetrics(broken)
		assert.Error(t, err, name)
	}
}

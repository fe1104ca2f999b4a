package status

// This file holds the status page for a person: the pool at a glance and
// the worker table, refreshing itself.

import (
	"html/template"
	"net/http"
	"strconv"
	"time"
)

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"secs": func(f *float64) string {
		if f == nil {
			return ""
		}
		return (time.Duration(*f * float64(time.Second))).Round(time.Millisecond).String()
	},
	"mib": func(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" },
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>wsgibridge: {{.App}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}.busy{background:#fff3d6}</style>
</head><body>
<h1>wsgibridge: {{.App}}</h1>
<p>{{.Mode}} mode, version {{.Version}}, up {{ago .Started}}.</p>
<table>
<tr><th>workers</th><td>{{.Workers.Busy}} busy, {{.Workers.Idle}} idle, {{.Workers.Starting}} starting; the pool keeps {{.Workers.Size}} ({{.Workers.Min}} to {{.Workers.Max}})</td></tr>
<tr><th>requests</th><td>{{.Requests.Served}} served, {{.Requests.InProgress}} in progress, {{.Requests.Waiting}} waiting, {{.Requests.Slow}} slow, {{.Requests.Refused}} refused</td></tr>
<tr><th>by status</th><td>{{range $k, $v := .Requests.ByStatus}}{{$k}}: {{$v}} {{end}}</td></tr>
{{with .ListenQueue}}<tr><th>listen queue</th><td>{{.Now}} waiting now, {{.Max}} at most, of {{.Backlog}}</td></tr>{{end}}
<tr><th>worker exits</th><td>{{range $k, $v := .WorkerExits}}{{$k}}: {{$v}} {{end}}</td></tr>
<tr><th>reloads</th><td>{{.Reloads.Count}}{{with .Reloads.Last}}, the last {{ago .}} ago{{end}}</td></tr>
{{with .ForkServers}}<tr><th>fork server</th><td>pid {{range .}}{{.}} {{end}}</td></tr>{{end}}
</table>
<h2>Workers</h2>
<table>
<tr><th>pid</th><th>state</th><th>served</th><th>started</th><th>memory</th><th>request</th><th>running for</th></tr>
{{range .Rows}}<tr class="{{.State}}"><td>{{.Pid}}</td><td>{{.State}}</td><td>{{.Served}}</td><td>{{ago .Started}} ago</td><td>{{mib .RSSBytes}}</td><td>{{.Request}}</td><td>{{secs .ElapsedSeconds}}</td></tr>
{{end}}</table>
<p><a href="status?full">JSON</a> · <a href="metrics">metrics</a> · <a href="stacks">stacks of the busy workers</a></p>
</body></html>
`))

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTemplate.Execute(w, s.Document(true)); err != nil {
		s.log.Error("status: the page does not render", "err", err)
	}
}

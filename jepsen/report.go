package jepsen

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"
)

// Second is the availability of one second of a run.
type Second struct {
	Second  int `json:"second"`
	OK      int `json:"ok"`
	Fail    int `json:"fail"`
	Unknown int `json:"unknown"`
}

// Availability buckets completed operations by the second they completed in.
func Availability(ops []Op) []Second {
	var out []Second
	for _, o := range ops {
		s := int(o.Return / int64(time.Second))
		for len(out) <= s {
			out = append(out, Second{Second: len(out)})
		}
		switch o.Outcome {
		case OK:
			out[s].OK++
		case Fail:
			if o.Conflict {
				out[s].OK++ // a refused CAS is an answer
			} else {
				out[s].Fail++
			}
		default:
			out[s].Unknown++
		}
	}
	return out
}

// SideStat is the availability of one side of one fault window.
type SideStat struct {
	Window  int    `json:"window"`
	Fault   string `json:"fault"`
	Side    string `json:"side"`
	OK      int    `json:"ok"`
	Fail    int    `json:"fail"`
	Unknown int    `json:"unknown"`
}

// sideGrace skips operations invoked right after a fault began: they may
// have been on their way before the cut.
const sideGrace = int64(time.Second)

// SideAvailability counts, per fault window that has sides, the outcomes of
// operations sent to nodes of each side, invoked after the window's first
// second and completed before it ended. addrToID maps client addresses to
// node IDs.
func SideAvailability(ops []Op, windows []Window, addrToID map[string]string) []SideStat {
	var out []SideStat
	for wi, w := range windows {
		if len(w.Sides) == 0 {
			continue
		}
		by := map[string]*SideStat{}
		for _, o := range ops {
			if o.Call < w.Start+sideGrace || o.Return > w.End {
				continue
			}
			side := w.Sides[addrToID[o.Node]]
			if side == "" {
				continue
			}
			st := by[side]
			if st == nil {
				st = &SideStat{Window: wi, Fault: w.Fault, Side: side}
				by[side] = st
			}
			switch {
			case o.Outcome == OK || o.Conflict:
				st.OK++
			case o.Outcome == Fail:
				st.Fail++
			default:
				st.Unknown++
			}
		}
		for _, side := range []string{"minority", "majority"} {
			if st := by[side]; st != nil {
				out = append(out, *st)
			}
		}
	}
	return out
}

// Latency is the latency summary of one operation type.
type Latency struct {
	Kind  Kind    `json:"kind"`
	Count int     `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// Latencies summarises successful operations by type.
func Latencies(ops []Op) []Latency {
	by := map[Kind][]int64{}
	for _, o := range ops {
		if o.Outcome == OK {
			by[o.Kind] = append(by[o.Kind], o.Return-o.Call)
		}
	}
	var out []Latency
	for k, ds := range by {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		ms := func(ns int64) float64 { return float64(ns) / 1e6 }
		out = append(out, Latency{Kind: k, Count: len(ds), P50Ms: ms(ds[len(ds)/2]), P99Ms: ms(ds[len(ds)*99/100]), MaxMs: ms(ds[len(ds)-1])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}

// Results is what a run writes to results.json.
type Results struct {
	Mode         string          `json:"mode"`
	Workload     string          `json:"workload"`
	Nemeses      []string        `json:"nemeses"`
	Backend      string          `json:"backend"`
	Nodes        int             `json:"nodes"`
	Clients      int             `json:"clients"`
	Seconds      float64         `json:"seconds"`
	Seed         uint64          `json:"seed"`
	UnsafeReads  bool            `json:"unsafe_reads,omitempty"`
	Ops          int             `json:"ops"`
	OK           int             `json:"ok"`
	Fail         int             `json:"fail"`
	Unknown      int             `json:"unknown"`
	Windows      []Window        `json:"fault_windows"`
	Availability []Second        `json:"availability"`
	Sides        []SideStat      `json:"availability_by_side"`
	Latency      []Latency       `json:"latency"`
	Register     *RegisterReport `json:"register,omitempty"`
	Set          *SetResult      `json:"set,omitempty"`
	Level        string          `json:"level,omitempty"`
	Stale        *StaleReport    `json:"stale_reads,omitempty"`
	APAvail      *APAvailability `json:"ap_availability,omitempty"`
	CPCutOff     *CPCutOff       `json:"cp_cut_off,omitempty"`
	// SideWindowsSkipped counts partition windows the side checks did not
	// judge: during or after a membership change the replica sets moved.
	SideWindowsSkipped int          `json:"side_windows_skipped,omitempty"`
	Convergence        *Convergence `json:"convergence,omitempty"`
	Valid              bool         `json:"valid"`
	Problems           []string     `json:"problems,omitempty"`
}

// RegisterReport is the register checker's part of the results.
type RegisterReport struct {
	Result       string `json:"result"` // Ok, Illegal or Unknown
	Linearizable bool   `json:"linearizable"`
	Checked      int    `json:"checked"`
	Unknown      int    `json:"unknown_outcomes"`
}

// Count fills the outcome totals.
func (r *Results) Count(ops []Op) {
	r.Ops = len(ops)
	for _, o := range ops {
		switch o.Outcome {
		case OK:
			r.OK++
		case Fail:
			r.Fail++
		default:
			r.Unknown++
		}
	}
}

// Summary prints the table a person reads first.
func (r *Results) Summary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", r.Mode)
	fmt.Fprintf(tw, "workload\t%s\n", r.Workload)
	fmt.Fprintf(tw, "nemesis\t%s (%d fault windows)\n", strings.Join(r.Nemeses, ","), len(r.Windows))
	fmt.Fprintf(tw, "cluster\t%d nodes, %s backend, %d clients, %.0fs, seed %d\n", r.Nodes, r.Backend, r.Clients, r.Seconds, r.Seed)
	avail := 0.0
	if r.Ops > 0 {
		avail = 100 * float64(r.OK) / float64(r.Ops)
	}
	fmt.Fprintf(tw, "operations\t%d: %d ok, %d failed, %d unknown (%.1f%% ok)\n", r.Ops, r.OK, r.Fail, r.Unknown, avail)
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "latency %s\tp50 %.1fms  p99 %.1fms  max %.1fms (%d ok)\n", l.Kind, l.P50Ms, l.P99Ms, l.MaxMs, l.Count)
	}
	for _, s := range r.Sides {
		n := s.OK + s.Fail + s.Unknown
		fmt.Fprintf(tw, "window %d %s\t%s side: %d of %d ok (%.0f%%)\n", s.Window, s.Fault, s.Side, s.OK, n, 100*float64(s.OK)/float64(max(n, 1)))
	}
	if r.Register != nil {
		verdict := "LINEARIZABLE"
		if !r.Register.Linearizable {
			verdict = "NOT LINEARIZABLE (porcupine: " + r.Register.Result + ")"
		}
		fmt.Fprintf(tw, "linearizability\t%s, %d ops checked, %d of unknown outcome\n", verdict, r.Register.Checked, r.Register.Unknown)
	}
	if c := r.CPCutOff; c != nil {
		fmt.Fprintf(tw, "cp cut-off sides\t%d requests reached a side without a majority of their key's replicas, %d served\n", c.Checked, c.Served)
	}
	if a := r.APAvail; a != nil {
		fmt.Fprintf(tw, "ap availability\t%d requests had a replica on their side, %d refused\n", a.Checked, a.Refused)
	}
	if st := r.Stale; st != nil {
		fmt.Fprintf(tw, "stale reads\t%d of %d reads missed a completed write (%.1f%%)\n", st.Stale, st.Reads, 100*float64(st.Stale)/float64(max(st.Reads, 1)))
		for _, b := range st.Buckets {
			if b.Reads > 0 {
				fmt.Fprintf(tw, "  %s after a write\t%d of %d stale (%.1f%%)\n", b.SinceWrite, b.Stale, b.Reads, 100*b.Rate)
			}
		}
		var levels []string
		for l := range st.ByLevel {
			levels = append(levels, l)
		}
		sort.Strings(levels)
		for _, l := range levels {
			s := st.ByLevel[l]
			var parts []string
			for _, b := range s.Buckets {
				if b.Reads > 0 {
					parts = append(parts, fmt.Sprintf("%s %.0f%%", b.SinceWrite, 100*b.Rate))
				}
			}
			fmt.Fprintf(tw, "  level %s\t%d of %d stale (%.1f%%): %s\n", l, s.Stale, s.Reads, 100*float64(s.Stale)/float64(max(s.Reads, 1)), strings.Join(parts, ", "))
		}
	}
	if cv := r.Convergence; cv != nil {
		if cv.Converged {
			fmt.Fprintf(tw, "convergence\tall replicas of %d partitions identical %.1fs after heal (Merkle roots, then %d keys compared on every replica), %d repair rounds\n", cv.Partitions, cv.Seconds, cv.KeysCompared, cv.Repairs)
		} else {
			fmt.Fprintf(tw, "convergence\tNOT converged after %.1fs: %v\n", cv.Seconds, cv.Differing)
		}
	}
	if s := r.Set; s != nil {
		fmt.Fprintf(tw, "set\t%d attempted, %d acknowledged, %d lost, %d unexpected, %d failed-but-present, %d recovered\n",
			s.Attempted, s.Acknowledged, len(s.Lost), len(s.Unexpected), len(s.FailedButPresent), s.Recovered)
	}
	v := "VALID: every promised guarantee held"
	if !r.Valid {
		v = "INVALID: " + strings.Join(r.Problems, "; ")
	}
	fmt.Fprintf(tw, "verdict\t%s\n", v)
	tw.Flush()
}

// Write saves results.json, history.jsonl and timeline.html into dir.
func (r *Results) Write(dir string, h *History, regInfo *porcupine.LinearizationInfo) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return err
	}
	if err := h.WriteJSONL(f); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if regInfo != nil {
		// porcupine's own visualisation: every key's history and the longest
		// linearizable prefix found, with the failure point when there is one.
		if err := porcupine.VisualizePath(RegisterModel(), *regInfo, filepath.Join(dir, "linearizability.html")); err != nil {
			return err
		}
	}
	tf, err := os.Create(filepath.Join(dir, "timeline.html"))
	if err != nil {
		return err
	}
	defer tf.Close()
	return timelineTmpl.Execute(tf, timelineData(r))
}

type tlRow struct {
	Second            int
	OK, Fail, Unknown int
	OKW, FailW, UnknW int
	Fault             string
}

func timelineData(r *Results) map[string]any {
	maxOps := 1
	for _, s := range r.Availability {
		maxOps = max(maxOps, s.OK+s.Fail+s.Unknown)
	}
	var rows []tlRow
	for _, s := range r.Availability {
		row := tlRow{Second: s.Second, OK: s.OK, Fail: s.Fail, Unknown: s.Unknown,
			OKW: 600 * s.OK / maxOps, FailW: 600 * s.Fail / maxOps, UnknW: 600 * s.Unknown / maxOps}
		for _, w := range r.Windows {
			if int64(s.Second)*1e9 < w.End && int64(s.Second+1)*1e9 > w.Start {
				row.Fault = w.Fault
			}
		}
		rows = append(rows, row)
	}
	ch := Chart{Title: "operations per second", YLabel: "ops/s", Series: []Series{
		{Name: "ok", Color: "#2a2"}, {Name: "failed", Color: "#c33"}, {Name: "unknown", Color: "#e90", Dashed: true}}}
	for _, s := range r.Availability {
		ch.Series[0].Values = append(ch.Series[0].Values, float64(s.OK))
		ch.Series[1].Values = append(ch.Series[1].Values, float64(s.Fail))
		ch.Series[2].Values = append(ch.Series[2].Values, float64(s.Unknown))
	}
	for _, w := range r.Windows {
		ch.Shade = append(ch.Shade, Span{From: float64(w.Start) / 1e9, To: float64(w.End) / 1e9, Label: w.Fault})
	}
	return map[string]any{"R": r, "Rows": rows, "Chart": ch.SVG()}
}

var timelineTmpl = template.Must(template.New("t").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>capkv partition test: {{.R.Workload}} / {{.R.Mode}}</title>
<style>body{font-family:sans-serif;margin:2em}td{padding:1px 6px;font-size:13px}.f{background:#fde2e2}
.bar{display:inline-block;height:12px}.ok{background:#3a3}.fail{background:#c33}.unk{background:#e90}</style></head><body>
<h1>{{.R.Mode}} / {{.R.Workload}}: {{if .R.Valid}}valid{{else}}INVALID{{end}}</h1>
<p>{{.R.Nodes}} nodes, {{.R.Clients}} clients, nemeses {{.R.Nemeses}}, seed {{.R.Seed}}.
{{.R.Ops}} operations: {{.R.OK}} ok, {{.R.Fail}} failed, {{.R.Unknown}} unknown.
{{range .R.Problems}}<br><b>{{.}}</b>{{end}}</p>
<p>Per second: <span class="bar ok" style="width:12px"></span> ok
<span class="bar fail" style="width:12px"></span> failed <span class="bar unk" style="width:12px"></span> unknown;
shaded rows are fault windows. See linearizability.html for the register history.</p>
{{.Chart}}
<table><tr><th>s</th><th>ok</th><th>fail</th><th>unknown</th><th></th><th>fault</th></tr>
{{range .Rows}}<tr{{if .Fault}} class="f"{{end}}><td>{{.Second}}</td><td>{{.OK}}</td><td>{{.Fail}}</td><td>{{.Unknown}}</td>
<td><span class="bar ok" style="width:{{.OKW}}px"></span><span class="bar fail" style="width:{{.FailW}}px"></span><span class="bar unk" style="width:{{.UnknW}}px"></span></td>
<td>{{.Fault}}</td></tr>
{{end}}</table></body></html>
`))

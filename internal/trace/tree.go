package trace

import (
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Node is a span with its children, in start order.
type Node struct {
	Span     Span    `json:"span"`
	Children []*Node `json:"children,omitempty"`
}

// Tree nests spans by parent ID. Spans whose parent is not among them
// (the trace's root, or a span whose parent was evicted or recorded
// outside the cluster, e.g. in kvctl) are roots, by start time.
func Tree(spans []Span) []*Node {
	byID := make(map[string]*Node, len(spans))
	for _, s := range spans {
		byID[s.SpanID] = &Node{Span: s}
	}
	var roots []*Node
	for _, s := range spans {
		n := byID[s.SpanID]
		if p, ok := byID[s.ParentID]; ok && s.ParentID != s.SpanID {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	var sortRec func([]*Node)
	sortRec = func(ns []*Node) {
		slices.SortStableFunc(ns, func(a, b *Node) int { return a.Span.Start.Compare(b.Span.Start) })
		for _, n := range ns {
			sortRec(n.Children)
		}
	}
	sortRec(roots)
	return roots
}

// attrOrder is the order the tree prints capkv's attributes in; others
// follow by name.
var attrOrder = []string{string(KeyKeyspace), string(KeyPartition), string(KeyMode), string(KeyLevel), string(KeyBatch), string(KeyOutcome)}

// PrintTree writes the trace as an indented tree: per span its offset from
// the trace's start, its duration, its node, its name and capkv's
// attributes.
func PrintTree(w io.Writer, spans []Span) {
	roots := Tree(spans)
	if len(roots) == 0 {
		return
	}
	t0 := spans[0].Start
	for _, s := range spans {
		if s.Start.Before(t0) {
			t0 = s.Start
		}
	}
	var rec func(n *Node, prefix string, last, top bool)
	rec = func(n *Node, prefix string, last, top bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if top {
			branch, next = "", ""
		}
		fmt.Fprintf(w, "%9s %9s  %-4s %s%s%s\n", fmtDur(n.Span.Start.Sub(t0)), fmtDur(n.Span.Duration()), n.Span.Node,
			prefix+branch, n.Span.Name+kindText(n.Span), attrText(n.Span))
		for i, c := range n.Children {
			rec(c, prefix+next, i == len(n.Children)-1, false)
		}
	}
	fmt.Fprintf(w, "%9s %9s  %-4s %s\n", "start", "took", "node", "span")
	for _, r := range roots {
		rec(r, "", true, true)
	}
}

// kindText marks the two ends of a gRPC call, which share a name.
func kindText(s Span) string {
	if s.Kind == "client" || s.Kind == "server" {
		return " (" + s.Kind + ")"
	}
	return ""
}

func attrText(s Span) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, k := range attrOrder {
		if v, ok := s.Attrs[k]; ok {
			fmt.Fprintf(&b, " %s=%s", strings.TrimPrefix(k, "capkv."), v)
			seen[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Attrs)) {
		if k == string(KeyNode) {
			if v := s.Attrs[k]; v != s.Node {
				fmt.Fprintf(&b, " to=%s", v)
			}
			continue
		}
		if !seen[k] && strings.HasPrefix(k, "capkv.") {
			fmt.Fprintf(&b, " %s=%s", strings.TrimPrefix(k, "capkv."), s.Attrs[k])
		}
	}
	if s.Error != "" {
		fmt.Fprintf(&b, " error=%q", s.Error)
	}
	return b.String()
}

// fmtDur prints a duration with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// waterfall is the self-contained HTML page of one trace: one row per span
// in tree order, a bar from its start to its end on a common time axis.
var waterfall = template.Must(template.New("w").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>capkv trace {{.ID}}</title>
<style>
body{font:13px system-ui,sans-serif;margin:20px}
table{border-collapse:collapse;width:100%}
td{padding:2px 6px;white-space:nowrap;border-bottom:1px solid #eee}
td.bar{width:55%;position:relative}
.b{position:absolute;top:4px;height:12px;background:#4a7bd0;border-radius:2px;min-width:1px}
.err{background:#d04a4a}
.n{color:#666}
</style></head><body>
<h2>trace {{.ID}}</h2><p>{{len .Rows}} spans on {{.Nodes}} nodes, {{.Total}}</p>
<table><tr><th>span</th><th>node</th><th>start</th><th>took</th><th></th></tr>
{{range .Rows}}<tr title="{{.Attrs}}"><td style="padding-left:{{.Indent}}px">{{.Name}}</td><td class="n">{{.Node}}</td><td>{{.Start}}</td><td>{{.Took}}</td>
<td class="bar"><div class="b{{if .Err}} err{{end}}" style="left:{{.Left}}%;width:{{.Width}}%"></div></td></tr>
{{end}}</table></body></html>
`))

// WriteHTML writes the trace as a self-contained waterfall page.
func WriteHTML(w io.Writer, traceID string, spans []Span) error {
	type row struct {
		Name, Node, Start, Took, Attrs string
		Indent                         int
		Left, Width                    float64
		Err                            bool
	}
	var rows []row
	if len(spans) == 0 {
		return waterfall.Execute(w, map[string]any{"ID": traceID, "Rows": rows, "Nodes": 0, "Total": "0"})
	}
	t0, t1 := spans[0].Start, spans[0].End
	nodes := map[string]bool{}
	for _, s := range spans {
		if s.Start.Before(t0) {
			t0 = s.Start
		}
		if s.End.After(t1) {
			t1 = s.End
		}
		nodes[s.Node] = true
	}
	total := float64(max(t1.Sub(t0), 1))
	var rec func(n *Node, depth int)
	rec = func(n *Node, depth int) {
		s := n.Span
		rows = append(rows, row{Name: s.Name, Node: s.Node, Start: fmtDur(s.Start.Sub(t0)), Took: fmtDur(s.Duration()),
			Attrs: strings.TrimSpace(attrText(s)), Indent: 6 + 16*depth, Err: s.Error != "",
			Left: 100 * float64(s.Start.Sub(t0)) / total, Width: 100 * float64(s.Duration()) / total})
		for _, c := range n.Children {
			rec(c, depth+1)
		}
	}
	for _, r := range Tree(spans) {
		rec(r, 0)
	}
	return waterfall.Execute(w, map[string]any{"ID": traceID, "Rows": rows, "Nodes": len(nodes), "Total": fmtDur(t1.Sub(t0))})
}

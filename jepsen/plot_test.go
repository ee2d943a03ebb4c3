package jepsen

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
)

type svgDoc struct {
	Rects []struct {
		X     float64 `xml:"x,attr"`
		Width float64 `xml:"width,attr"`
	} `xml:"rect"`
	Lines []struct {
		Points string `xml:"points,attr"`
		Title  string `xml:"title"`
	} `xml:"polyline"`
	Texts []string `xml:"text"`
}

func TestChartSVG(t *testing.T) {
	c := Chart{
		Title: "ops <per> second", YLabel: "ops/s",
		Series: []Series{
			{Name: "cp majority", Color: "#2a7", Values: []float64{10, 20, 30, 40, 50}},
			{Name: "cp <minority>", Color: "#c33", Values: []float64{10, 0, math.NaN(), 0, 10}, Dashed: true},
		},
		Shade: []Span{{From: 1, To: 3, Label: "split"}, {From: 9, To: 12, Label: "off the chart"}},
	}
	var doc svgDoc
	if err := xml.Unmarshal([]byte(c.SVG()), &doc); err != nil {
		t.Fatalf("SVG is not well-formed XML: %v\n%s", err, c.SVG())
	}
	if len(doc.Lines) != 2 {
		t.Fatalf("want one polyline per series, got %d", len(doc.Lines))
	}
	if got := len(strings.Fields(doc.Lines[0].Points)); got != 5 {
		t.Errorf("series 0: %d points, want 5", got)
	}
	if got := len(strings.Fields(doc.Lines[1].Points)); got != 4 {
		t.Errorf("series 1: NaN must leave a gap: %d points, want 4", got)
	}
	if doc.Lines[1].Title != "cp <minority>" {
		t.Errorf("series name not escaped and restored: %q", doc.Lines[1].Title)
	}
	// One shaded span: from t=1 to t=3 of a 0..4 axis, i.e. half the width.
	if len(doc.Rects) != 1 {
		t.Fatalf("want 1 shaded span (the other lies past the data), got %d", len(doc.Rects))
	}
	if r := doc.Rects[0]; math.Abs(r.Width-chartInnerW/2) > 0.2 || math.Abs(r.X-(chartLeft+chartInnerW/4)) > 0.2 {
		t.Errorf("span at x=%.1f w=%.1f, want x=%.1f w=%.1f", r.X, r.Width, chartLeft+chartInnerW/4, chartInnerW/2)
	}
	// The y axis tops out at a round number at or above the largest value.
	if !strings.Contains(strings.Join(doc.Texts, " "), "50") {
		t.Errorf("y axis labels %v lack the maximum 50", doc.Texts)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0, 1}, {0.7, 1}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {130, 200}, {4000, 5000}} {
		if got := niceCeil(c.in); got != c.want {
			t.Errorf("niceCeil(%g) = %g, want %g", c.in, got, c.want)
		}
	}
}

package jepsen

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Series is one line of a Chart: a value per second.
type Series struct {
	Name   string
	Color  string // CSS colour
	Values []float64
	Dashed bool
}

// Span is a shaded interval of a Chart, in seconds (a fault window).
type Span struct {
	From, To float64
	Label    string
}

// Chart is a line plot over time, rendered as inline SVG so that the
// reports stay one self-contained file with no scripts to load.
type Chart struct {
	Title  string
	YLabel string
	YMax   float64 // 0: the largest value, rounded up
	Series []Series
	Shade  []Span
}

const (
	chartW, chartH         = 720.0, 220.0
	chartLeft, chartRight  = 56.0, 150.0 // room for the y axis and the legend
	chartTop, chartBottom  = 24.0, 30.0
	chartInnerW, chartInnH = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
)

// SVG renders the chart. Values are escaped; the result is safe to embed in
// an html/template page.
func (c Chart) SVG() template.HTML {
	n := 0
	ymax := c.YMax
	for _, s := range c.Series {
		n = max(n, len(s.Values))
		if c.YMax == 0 {
			for _, v := range s.Values {
				if !math.IsNaN(v) { // a gap, not a value
					ymax = max(ymax, v)
				}
			}
		}
	}
	if c.YMax == 0 {
		ymax = niceCeil(ymax)
	}
	if ymax <= 0 {
		ymax = 1
	}
	xmax := float64(max(n-1, 1))
	x := func(t float64) float64 { return chartLeft + chartInnerW*t/xmax }
	y := func(v float64) float64 { return chartTop + chartInnH*(1-math.Min(v, ymax)/ymax) }

	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="11">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%g" y="14" font-size="13" font-weight="bold">%s</text>`, chartLeft, esc(c.Title))
	for _, s := range c.Shade {
		x0, x1 := x(math.Max(s.From, 0)), x(math.Min(s.To, xmax))
		if x1 <= x0 {
			continue
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%g" width="%.1f" height="%g" fill="#fbd5d5"><title>%s</title></rect>`, x0, chartTop, x1-x0, chartInnH, esc(s.Label))
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" fill="#a33">%s</text>`, x0+3, chartTop+12, esc(s.Label))
	}
	// Axes, with four horizontal grid lines.
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, chartLeft, chartLeft+chartInnerW, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`, chartLeft-4, y(v)+4, esc(fmtTick(v)))
	}
	step := max(1, int(xmax)/10)
	for t := 0; t <= int(xmax); t += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%ds</text>`, x(float64(t)), chartH-chartBottom+14, t)
	}
	fmt.Fprintf(&b, `<text x="12" y="%g" transform="rotate(-90 12 %g)" text-anchor="middle">%s</text>`, chartTop+chartInnH/2, chartTop+chartInnH/2, esc(c.YLabel))
	for i, s := range c.Series {
		var pts strings.Builder
		for t, v := range s.Values {
			if math.IsNaN(v) {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(float64(t)), y(v))
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="5 3"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s</title></polyline>`, esc(s.Color), dash, strings.TrimSpace(pts.String()), esc(s.Name))
		ly := chartTop + 14*float64(i)
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`, chartW-chartRight+10, chartW-chartRight+28, ly, ly, esc(s.Color), dash)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f">%s</text>`, chartW-chartRight+32, ly+4, esc(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

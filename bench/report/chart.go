package report

import (
	"cmp"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Chart size.
const (
	chartWidth  = 30 * vg.Centimeter
	chartHeight = 13 * vg.Centimeter
)

// WriteChart draws two panels of the unary pseudonymize runs: throughput
// against batch size, one line per number of callers, under the ceiling
// cores ÷ ScalarMult and the target lines; and the p50, p90 and p99 latency
// of a call for every run, on a log scale. Both titles say where the server
// and the generator ran (GRPC.Mode). format is "png" or "svg".
func WriteChart(w io.Writer, g *GRPC, format string) error {
	if g == nil || !slices.ContainsFunc(g.Runs, func(r GRPCRun) bool { return r.Op == "pseudonymize" }) {
		return errors.New("report: no pseudonymize runs to chart")
	}
	tp, err := throughputPlot(g)
	if err != nil {
		return err
	}
	lp, err := latencyPlot(g)
	if err != nil {
		return err
	}
	var c vg.CanvasWriterTo
	switch format {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(110))}
	case "svg":
		c = vgsvg.New(chartWidth, chartHeight)
	default:
		return fmt.Errorf("report: unknown chart format %q (png or svg)", format)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Centimeter, PadY: 3 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{tp, lp}}
	canvases := plot.Align(plots, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[0][1])
	_, err = c.WriteTo(w)
	return err
}

// FormatOf is the chart format of a file name: its extension.
func FormatOf(path string) string {
	return strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
}

func throughputPlot(g *GRPC) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Throughput of pseudonymize, server on %s\n%s", cores(g.Cores), g.Mode())
	p.X.Label.Text = "batch size (items per call)"
	p.Y.Label.Text = "items/s"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	p.Y.Min = 0
	p.Y.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
		ticks := plot.DefaultTicks{}.Ticks(lo, hi)
		for i := range ticks {
			if ticks[i].Label != "" {
				ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', 0, 64)
			}
		}
		return ticks
	})

	concs, byConc := throughputRuns(g)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range g.Runs {
		lo, hi = min(lo, float64(r.Batch)), max(hi, float64(r.Batch))
	}
	if lo == hi {
		lo, hi = lo/2, hi*2
	}
	ceiling := g.CeilingItemsPerSec
	hline := func(frac float64, label string, dashes []vg.Length, col color.Color) error {
		l, err := plotter.NewLine(plotter.XYs{{X: lo, Y: frac * ceiling}, {X: hi, Y: frac * ceiling}})
		if err != nil {
			return err
		}
		l.Color, l.Dashes, l.Width = col, dashes, vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(label, l)
		return nil
	}
	grey := color.Gray{Y: 90}
	if err := hline(1, fmt.Sprintf("ceiling %d ÷ ScalarMult = %.0f/s", g.Cores, ceiling), nil, color.Black); err != nil {
		return nil, err
	}
	if err := hline(0.75, "target batch 100: 0.75 × ceiling", []vg.Length{vg.Points(6), vg.Points(3)}, grey); err != nil {
		return nil, err
	}
	if err := hline(0.40, "target unary: 0.40 × ceiling", []vg.Length{vg.Points(2), vg.Points(2)}, grey); err != nil {
		return nil, err
	}
	for i, n := range concs {
		var xys plotter.XYs
		for _, r := range byConc[n] {
			xys = append(xys, plotter.XY{X: float64(r.Batch), Y: r.ItemsPerSec})
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		l.Color, s.Color = plotutil.Color(i), plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		p.Add(l, s)
		label := fmt.Sprintf("%d callers", n)
		if n == 1 {
			label = "1 caller"
		}
		p.Legend.Add(label, l, s)
	}
	// Server-bound: the best rate per batch size if the server had the
	// cores to itself, from its CPU time per item.
	best := map[int]float64{}
	for _, r := range g.Runs {
		if r.closedLoop() && r.ServerCPUXCeiling > 0 && r.Op == "pseudonymize" {
			best[r.Batch] = max(best[r.Batch], r.ServerCPUXCeiling*ceiling)
		}
	}
	if len(best) > 0 {
		var xys plotter.XYs
		for b, v := range best {
			xys = append(xys, plotter.XY{X: float64(b), Y: v})
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color, l.Dashes = color.RGBA{R: 150, G: 60, B: 160, A: 255}, []vg.Length{vg.Points(4), vg.Points(2), vg.Points(1), vg.Points(2)}
		p.Add(l)
		p.Legend.Add("server-bound (server CPU/item)", l)
	}
	p.Y.Max = ceiling * 1.5 // room for the legend
	p.Add(plotter.NewGrid())
	return p, nil
}

func latencyPlot(g *GRPC) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency of a pseudonymize call\n%s", g.Mode())
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = decades{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(8)

	var names []string
	series := []struct {
		name string
		get  func(r *GRPCRun) float64
	}{
		{"p50", func(r *GRPCRun) float64 { return r.LatencyMs.P50 }},
		{"p90", func(r *GRPCRun) float64 { return r.LatencyMs.P90 }},
		{"p99", func(r *GRPCRun) float64 { return r.LatencyMs.P99 }},
	}
	pts := make([]plotter.XYs, len(series))
	lo, hi := math.Inf(1), math.Inf(-1)
	var runs []*GRPCRun
	for i := range g.Runs {
		if g.Runs[i].Op == "pseudonymize" {
			runs = append(runs, &g.Runs[i])
		}
	}
	for i, r := range runs {
		label := fmt.Sprintf("b%d c%d", r.Batch, r.Concurrency)
		if r.TargetCallsPerSec > 0 {
			label += fmt.Sprintf(" @%.0f/s", r.TargetCallsPerSec)
		}
		names = append(names, label)
		for j, s := range series {
			v := s.get(r)
			if v <= 0 {
				continue
			}
			pts[j] = append(pts[j], plotter.XY{X: float64(i), Y: v})
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		return nil, errors.New("report: no latency to chart")
	}
	for j, s := range series {
		if len(pts[j]) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts[j])
		if err != nil {
			return nil, err
		}
		sc.Color = plotutil.Color(j + 3)
		sc.Shape = plotutil.Shape(j)
		sc.Radius = vg.Points(3.5)
		p.Add(sc)
		p.Legend.Add(s.name, sc)
	}
	// The 2 ms goal of p99 at half load.
	l, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 2}, {X: float64(len(names)) - 0.5, Y: 2}})
	if err != nil {
		return nil, err
	}
	l.Color, l.Dashes = color.Gray{Y: 90}, []vg.Length{vg.Points(2), vg.Points(2)}
	p.Add(l)
	p.Legend.Add("2 ms (p99 goal at half load)", l)
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 4
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	p.X.Tick.Label.Font.Size = vg.Points(8)
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(min(lo, 2))))
	p.Y.Max = math.Pow(10, math.Ceil(math.Log10(max(hi, 2))+0.6)) // room for the legend
	p.Add(plotter.NewGrid())
	return p, nil
}

// decades ticks a log axis at every power of ten, labeled, and at its
// multiples, unlabeled. (plot.LogTicks starts at 1 for ranges below 1.)
type decades struct{}

func (decades) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		v := math.Pow(10, e)
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		for i := 2.0; i < 10; i++ {
			if v*i <= hi {
				ticks = append(ticks, plot.Tick{Value: v * i})
			}
		}
	}
	return ticks
}

package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// palette colours one series per report.
var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// PlotFanout draws fanout-v1 reports into a PNG at path: latency p50 (dashed)
// and p99 (solid) against offered load on top, delivered/s against offered
// load below (with the ideal offered x members), log scales. Several reports
// (Parley, --raw and --floor) share the axes.
func PlotFanout(path string, reps ...*Report) error {
	if len(reps) == 0 {
		return errors.New("no report to plot")
	}
	lat := plot.New()
	lat.Title.Text = "fanout-v1: end-to-end latency"
	for _, r := range reps {
		if r.Mode == "parley" && r.Persistence != "" {
			lat.Title.Text += "\nparley: persistence " + shorten(r.Persistence, 90)
			break
		}
	}
	lat.X.Label.Text = "offered msgs/s"
	lat.Y.Label.Text = "latency ms"
	thr := plot.New()
	thr.Title.Text = "fanout-v1: deliveries"
	thr.X.Label.Text = "offered msgs/s"
	thr.Y.Label.Text = "delivered/s"
	for _, p := range []*plot.Plot{lat, thr} {
		logAxes(p)
		p.Legend.Top, p.Legend.Left = true, true
	}
	maxOffered := 0.0
	for i, r := range reps {
		c := palette[i%len(palette)]
		name := r.Mode
		switch r.Mode {
		case "raw":
			name = "raw (Redis pub/sub alone)"
		case "floor":
			name = "floor (grpc-go alone)"
		}
		var p50, p99, del plotter.XYs
		for _, s := range r.Steps {
			x := float64(s.Offered)
			maxOffered = max(maxOffered, x)
			p50 = append(p50, plotter.XY{X: x, Y: max(s.P50, 0.01)})
			p99 = append(p99, plotter.XY{X: x, Y: max(s.P99, 0.01)})
			if s.Delivered > 0 {
				del = append(del, plotter.XY{X: x, Y: s.Delivered})
			}
		}
		if err := addLine(lat, p99, c, false, name+" p99"); err != nil {
			return err
		}
		if err := addLine(lat, p50, c, true, name+" p50"); err != nil {
			return err
		}
		if err := addLine(thr, del, c, false, name); err != nil {
			return err
		}
	}
	if members := reps[0].Members; members > 0 && maxOffered > 0 {
		ideal := plotter.XYs{}
		for _, s := range reps[0].Steps {
			ideal = append(ideal, plotter.XY{X: float64(s.Offered), Y: float64(s.Offered * members)})
		}
		if err := addLine(thr, ideal, color.Gray{Y: 0x99}, true, fmt.Sprintf("ideal (offered x %d)", members)); err != nil {
			return err
		}
	}
	bound := plotter.NewFunction(func(float64) float64 { return 100 })
	bound.Color, bound.Dashes = color.Gray{Y: 0xbb}, []vg.Length{vg.Points(1), vg.Points(3)}
	lat.Add(bound)
	lat.Legend.Add("100 ms (peak bound)", bound)
	return savePNG(path, lat, thr)
}

// PlotPersist draws a persist-v1 report into a PNG at path: records stored
// per second over time by the persister and by the raw insertMany loop.
func PlotPersist(path string, r *PersistReport) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("persist-v1: %d records into the store (persister/raw %.2f)", r.Records, r.Ratio)
	p.X.Label.Text = "seconds since the phase started"
	p.Y.Label.Text = "records stored per second (5 s windows)"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	for i, ph := range []struct {
		name string
		p    PersistPhase
	}{{"persister", r.Persister}, {"raw insertMany", r.Raw}} {
		// Rates over windows of about 5 s (samples are about 1 s apart).
		var xys plotter.XYs
		const window = 5
		for j := 1; j < len(ph.p.Samples); j++ {
			a, b := ph.p.Samples[max(j-window, 0)], ph.p.Samples[j]
			if dt := b[0] - a[0]; dt > 0 {
				xys = append(xys, plotter.XY{X: b[0], Y: (b[1] - a[1]) / dt})
			}
		}
		if len(xys) == 0 {
			continue
		}
		if err := addLine(p, xys, palette[i], false, fmt.Sprintf("%s (steady %.0f/s)", ph.name, ph.p.RecordsPerS)); err != nil {
			return err
		}
	}
	return savePNG(path, p)
}

// PlotFiles reads JSON reports (all fanout-v1, or one persist-v1) and draws
// them into out.
func PlotFiles(out string, in ...string) error {
	var fanout []*Report
	for _, path := range in {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var head struct {
			Workload string `json:"workload"`
		}
		if err := json.Unmarshal(b, &head); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch head.Workload {
		case "fanout-v1":
			var r Report
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			fanout = append(fanout, &r)
		case "persist-v1":
			if len(in) != 1 {
				return errors.New("persist-v1: plot one report at a time")
			}
			var r PersistReport
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return PlotPersist(out, &r)
		default:
			return fmt.Errorf("%s: no plot for workload %q", path, head.Workload)
		}
	}
	return PlotFanout(out, fanout...)
}

func logAxes(p *plot.Plot) {
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
}

func addLine(p *plot.Plot, xys plotter.XYs, c color.Color, dashed bool, legend string) error {
	if len(xys) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.Color, pts.Color = c, c
	l.Width = vg.Points(1.5)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		pts.Shape = draw.RingGlyph{}
	} else {
		pts.Shape = draw.CircleGlyph{}
	}
	p.Add(l, pts)
	if legend != "" {
		p.Legend.Add(legend, l, pts)
	}
	return nil
}

// savePNG draws plots stacked vertically into one PNG.
func savePNG(path string, plots ...*plot.Plot) error {
	const w, h = 8 * vg.Inch, 4.5 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h*vg.Length(len(plots))), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(6), PadY: vg.Points(12)}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

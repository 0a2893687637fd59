// Command report combines the JSON of cmd/pseudobench and cmd/compare into
// bench/results/latest.json, a markdown page with the targets of the
// performance issue, and a chart of throughput and latency. See package
// report.
//
//	go run ./cmd/report -grpc results/grpc.json -compare results/compare.json \
//	    -json results/latest.json -md results/latest.md -chart results/throughput.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ehealth-pseudo/pseudonymizer/bench/compare"
	"github.com/ehealth-pseudo/pseudonymizer/bench/report"
)

const usage = `Usage:
    report [-grpc file] [-compare file] [-json file] [-md file] [-chart file.png|file.svg]

Flags:
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintf(os.Stderr, "report: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	grpcIn := fs.String("grpc", "", "JSON `file` written by cmd/pseudobench -json")
	compareIn := fs.String("compare", "", "JSON `file` written by cmd/compare -json")
	jsonOut := fs.String("json", "", "write the combined results and targets as JSON to `file`")
	mdOut := fs.String("md", "", "write a markdown page to `file`")
	chartOut := fs.String("chart", "", "write the chart to `file` (.png or .svg)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *grpcIn == "" && *compareIn == "" {
		return fmt.Errorf("give -grpc and/or -compare")
	}
	var (
		g          *report.GRPC
		c          *compare.Result
		gRaw, cRaw json.RawMessage
		err        error
	)
	if *grpcIn != "" {
		g = new(report.GRPC)
		if gRaw, err = report.ReadJSON(*grpcIn, g); err != nil {
			return err
		}
	}
	if *compareIn != "" {
		c = new(compare.Result)
		if cRaw, err = report.ReadJSON(*compareIn, c); err != nil {
			return err
		}
	}
	s := report.New(g, gRaw, c, cRaw)
	if *chartOut != "" {
		if err := write(*chartOut, func(f *os.File) error { return report.WriteChart(f, g, report.FormatOf(*chartOut)) }); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		if err := write(*jsonOut, func(f *os.File) error { return s.WriteJSON(f) }); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		chart := ""
		if *chartOut != "" {
			if rel, err := filepath.Rel(filepath.Dir(*mdOut), *chartOut); err == nil {
				chart = filepath.ToSlash(rel)
			}
		}
		if err := write(*mdOut, func(f *os.File) error { return s.WriteMarkdown(f, chart) }); err != nil {
			return err
		}
	}
	for _, t := range s.Targets {
		met := "not measured"
		if t.Met != nil {
			met = map[bool]string{true: "met", false: "MISSED"}[*t.Met]
		}
		fmt.Printf("%-52s %-30s %-12s %s\n", t.Name, t.Goal, met, t.Measured)
	}
	return nil
}

func write(path string, f func(*os.File) error) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f(out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

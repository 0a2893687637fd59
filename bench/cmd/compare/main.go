// Command compare measures, in one process, our server-side pseudonymize
// (transitInfo included) beside a ristretto255 ScalarMult and circl's
// RFC 9497 OPRF and VOPRF Evaluate, and prints the cost per item and the
// ratios between them. See package compare.
//
//	go run ./cmd/compare -json results/compare.json -md results/compare.md
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/bench/compare"
)

const usage = `Usage:
    compare [-rounds N] [-per-case D] [-batch 1,100] [-json file] [-md file]

Flags:
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintf(os.Stderr, "compare: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	rounds := fs.Int("rounds", 15, "number of interleaved rounds")
	perCase := fs.Duration("per-case", 30*time.Millisecond, "time of each case in each round")
	batches := fs.String("batch", "1,100", "comma-separated batch sizes")
	jsonOut := fs.String("json", "", "write the result as JSON to `file`")
	mdOut := fs.String("md", "", "write the result as a markdown table to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var bs []int
	for f := range strings.SplitSeq(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 10000 {
			return fmt.Errorf("-batch: %q is not a batch size (1 to 10000)", f)
		}
		bs = append(bs, n)
	}
	if *rounds < 1 || *rounds > 1000 || *perCase <= 0 || *perCase > time.Minute {
		return fmt.Errorf("-rounds must be 1 to 1000 and -per-case positive, at most a minute")
	}
	r, err := compare.Run(compare.Options{Rounds: *rounds, PerCase: *perCase, Batches: bs})
	if err != nil {
		return err
	}
	if err := compare.WriteTable(os.Stdout, r); err != nil {
		return err
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		f, err := os.Create(*mdOut)
		if err != nil {
			return err
		}
		if err := compare.WriteMarkdown(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return nil
}

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

const usage = `usage:
  pseudo [flags] pseudonymize -domain D [-kind niss|raw] [value ...]
  pseudo [flags] identify     -domain D [-kind niss|raw] [transit-pseudonym ...]
  pseudo [flags] convert      -from A -to B [transit-pseudonym ...]
  pseudo [flags] domain       NAME
flags (before or after the command):
  -addr host:port     service address (default 127.0.0.1:50051, env PSEUDO_ADDR)
  -ca file            CA certificate of the service (PEM)
  -cert, -key file    client certificate and key for mTLS (PEM)
  -insecure           plaintext, for a -dev service on loopback only
  -principal name     caller name sent to a -dev service (x-pseudonymizer-principal)
  -token file         OAuth2 bearer token sent with every call (over TLS)
  -in file            input, one value per line ("-" = stdin) when no values are given
  -batch n            items per call (default 1000)
  -timeout d          per-call timeout (default 30s)
  -version            print the version and VCS revision, and exit
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type itemsFailed struct{ failed, total int }

func (e itemsFailed) Error() string { return fmt.Sprintf("%d of %d items failed", e.failed, e.total) }

type options struct {
	addr, ca, cert, key, principal, token, in string
	insecure                                  bool
	batch                                     int
	timeout                                   time.Duration
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if buildinfo.Requested(args) {
		buildinfo.Print(stdout, "pseudo")
		return nil
	}
	addr := os.Getenv("PSEUDO_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	o := options{addr: addr, in: "-", batch: 1000, timeout: 30 * time.Second}
	// The connection and input flags are accepted before and after the
	// command; each flag set starts from the values parsed so far.
	common := func(fs *flag.FlagSet) {
		fs.StringVar(&o.addr, "addr", o.addr, "")
		fs.StringVar(&o.ca, "ca", o.ca, "")
		fs.StringVar(&o.cert, "cert", o.cert, "")
		fs.StringVar(&o.key, "key", o.key, "")
		fs.BoolVar(&o.insecure, "insecure", o.insecure, "")
		fs.StringVar(&o.principal, "principal", o.principal, "")
		fs.StringVar(&o.token, "token", o.token, "")
		fs.StringVar(&o.in, "in", o.in, "")
		fs.IntVar(&o.batch, "batch", o.batch, "")
		fs.DurationVar(&o.timeout, "timeout", o.timeout, "")
	}
	fs := flag.NewFlagSet("pseudo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	common(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return usageError{"missing command"}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
	sub.SetOutput(io.Discard)
	common(sub)
	domain := sub.String("domain", "", "")
	kind := sub.String("kind", "niss", "")
	from := sub.String("from", "", "")
	to := sub.String("to", "", "")
	if err := sub.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	switch cmd {
	case "pseudonymize", "identify":
		if *domain == "" {
			return usageError{cmd + ": -domain is required"}
		}
		if *kind != string(identifier.KindNISS) && *kind != string(identifier.KindRaw) {
			return usageError{"-kind must be niss or raw"}
		}
	case "convert":
		if *from == "" || *to == "" {
			return usageError{"convert: -from and -to are required"}
		}
	case "domain":
		if sub.NArg() != 1 {
			return usageError{"domain: want one domain name"}
		}
	default:
		return usageError{"unknown command " + cmd}
	}
	if o.batch <= 0 {
		return usageError{"-batch must be positive"}
	}

	conn, err := dial(&o)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := client.New(conn, client.WithMaxBatch(o.batch), client.WithCache(0))
	if o.principal != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-pseudonymizer-principal", o.principal)
	}
	if cmd == "domain" {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		d, err := c.Domain(cctx, sub.Arg(0))
		if err != nil {
			return callError(err)
		}
		fmt.Fprintf(stdout, "name: %s\naudience: %s\nttl: %s\nactive kid: %s\naccepted kids: %s\n",
			d.Name, d.Audience, d.TTL, d.ActiveKid, strings.Join(d.AcceptedKids, ", "))
		ops := make([]string, len(d.Operations))
		for i, op := range d.Operations {
			ops[i] = string(op)
		}
		fmt.Fprintf(stdout, "you may: %s\n", strings.Join(ops, ", "))
		if len(d.ConvertTargets) > 0 {
			fmt.Fprintf(stdout, "convert to: %s\n", strings.Join(d.ConvertTargets, ", "))
		}
		return nil
	}

	lines, err := inputLines(sub.Args(), o.in, stdin)
	if err != nil {
		return err
	}
	p := newProgress(stderr, len(lines))
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	failed := 0
	for lo := 0; lo < len(lines); lo += o.batch {
		chunk := lines[lo:min(lo+o.batch, len(lines))]
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		results, err := process(cctx, c, cmd, *domain, *from, *to, identifier.Kind(*kind), chunk)
		cancel()
		if err != nil {
			out.Flush()
			p.done()
			return callError(err)
		}
		for _, r := range results {
			if strings.HasPrefix(r, "ERROR ") {
				failed++
			}
			fmt.Fprintln(out, r)
		}
		p.add(len(chunk))
	}
	p.done()
	if failed > 0 {
		return itemsFailed{failed, len(lines)}
	}
	return nil
}

// process handles one batch and returns one output line per input line.
func process(ctx context.Context, c *client.Client, cmd, domain, from, to string, kind identifier.Kind, lines []string) ([]string, error) {
	out := make([]string, len(lines))
	switch cmd {
	case "pseudonymize":
		ids := make([][]byte, len(lines))
		for i, l := range lines {
			id, err := identifier.Normalize(kind, l)
			if err != nil {
				out[i] = "ERROR invalid identifier"
				continue
			}
			ids[i] = id
		}
		var todo [][]byte
		var at []int
		for i, id := range ids {
			if id != nil {
				todo = append(todo, id)
				at = append(at, i)
			}
		}
		res, errs, err := c.PseudonymizeBatch(ctx, domain, todo)
		if err != nil {
			return nil, err
		}
		for j, i := range at {
			out[i] = line(res[j], errs[j])
		}
	case "identify", "convert":
		ts := make([]*pseudonym.Transit, 0, len(lines))
		at := make([]int, 0, len(lines))
		for i, l := range lines {
			t, err := pseudonym.ParseTransit(l)
			if err != nil {
				out[i] = "ERROR malformed transit pseudonym"
				continue
			}
			ts = append(ts, t)
			at = append(at, i)
		}
		if cmd == "identify" {
			ids, errs, err := c.IdentifyBatch(ctx, domain, ts)
			if err != nil {
				return nil, err
			}
			for j, i := range at {
				switch {
				case errs[j] != nil:
					out[i] = errorLine(errs[j])
				case kind == identifier.KindNISS:
					out[i] = identifier.FormatNISS(ids[j])
				default:
					out[i] = string(ids[j])
				}
			}
		} else {
			res, errs, err := c.ConvertBatch(ctx, from, to, ts)
			if err != nil {
				return nil, err
			}
			for j, i := range at {
				out[i] = line(res[j], errs[j])
			}
		}
	}
	return out, nil
}

func line(t *pseudonym.Transit, err error) string {
	if err != nil {
		return errorLine(err)
	}
	return t.String()
}

// errorLine describes an item's error by its reason: the service's, or
// for the protocol's errors the SDK found itself (an answer that is not a
// valid point, say) the reason the service would give.
func errorLine(err error) string {
	var ie *client.ItemError
	if errors.As(err, &ie) {
		if ie.Reason != "" {
			return "ERROR " + reasonName(ie.Reason)
		}
		return "ERROR " + ie.Code.String()
	}
	if e, ok := protoerr.Lookup(err); ok && e.Reason != "ERROR_REASON_UNSPECIFIED" {
		return "ERROR " + reasonName(e.Reason)
	}
	return "ERROR " + err.Error() // the SDK's own sentinel texts carry no data
}

// reasonName is an ErrorReason's name for humans: "expired" for
// ERROR_REASON_EXPIRED.
func reasonName(reason string) string {
	return strings.ToLower(strings.TrimPrefix(reason, "ERROR_REASON_"))
}

// callError describes a whole-call failure by its gRPC code and message
// (the service's messages carry no data).
func callError(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("service: %s: %s", st.Code(), st.Message())
	}
	return err
}

func inputLines(args []string, in string, stdin io.Reader) ([]string, error) {
	if len(args) > 0 {
		return args, nil
	}
	r := stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

func dial(o *options) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials
	if o.insecure {
		creds = insecure.NewCredentials()
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.ca != "" {
			pem, err := os.ReadFile(o.ca)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-ca %s: no certificate found", o.ca)
			}
			cfg.RootCAs = pool
		}
		if o.cert != "" || o.key != "" {
			cert, err := tls.LoadX509KeyPair(o.cert, o.key)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.token != "" {
		if o.insecure {
			return nil, usageError{"-token needs TLS"}
		}
		b, err := os.ReadFile(o.token)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(b)))))
	}
	return grpc.NewClient(o.addr, opts...)
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// progress draws a bar on stderr when it is a terminal and the input is
// larger than one batch.
type progress struct {
	w          io.Writer
	total, n   int
	on         bool
	start      time.Time
	lastRedraw time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok && total > 1000 {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.on = true
		}
	}
	return p
}

func (p *progress) add(n int) {
	p.n += n
	if !p.on || time.Since(p.lastRedraw) < 100*time.Millisecond && p.n < p.total {
		return
	}
	p.lastRedraw = time.Now()
	const width = 30
	filled := width * p.n / max(p.total, 1)
	rate := float64(p.n) / max(time.Since(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d %.0f/s", strings.Repeat("#", filled), strings.Repeat(" ", width-filled),
		100*p.n/max(p.total, 1), p.n, p.total, rate)
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}

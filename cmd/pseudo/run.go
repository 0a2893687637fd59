package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
flags (before or after the command; the connection flags default to the
environment variable named):
  -addr host:port     service address (default 127.0.0.1:50051; $PSEUDO_ADDR)
  -ca file            CA certificate of the service (PEM; $PSEUDO_CA)
  -cert, -key file    client certificate and key for mTLS (PEM; $PSEUDO_CERT, $PSEUDO_KEY)
  -insecure           plaintext, for a -dev service on loopback only ($PSEUDO_INSECURE=1)
  -principal name     caller name sent to a -dev service (x-pseudonymizer-principal;
                      $PSEUDO_PRINCIPAL)
  -token file         OAuth2 bearer token sent with every call, over TLS ($PSEUDO_TOKEN)
  -in file            input, one value per line ("-" = stdin) when no values are given
  -o text|json        output: text (default), one result per input line, "ERROR <reason>"
                      for a refused item; or json, one JSON object per input line
                      (JSON Lines): {"line":N,"result":"..."} or {"line":N,"error":"<reason>"},
                      N counting input values from 1; domain prints one object
  -batch n            items per call (default 1000)
  -timeout d          per-call timeout, retries included (default 30s)
  -h                  this help
Calls refused for the caller's rate limit (RESOURCE_EXHAUSTED) are retried
after the delay the service gives (google.rpc.RetryInfo), so large inputs
go at the pace the service allows; so are calls that find the service
UNAVAILABLE, with backoff. A progress bar with ETA is drawn on stderr when
it is a terminal.
  -version            print the version and VCS revision, and exit
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type itemsFailed struct{ failed, total int }

func (e itemsFailed) Error() string { return fmt.Sprintf("%d of %d items failed", e.failed, e.total) }

type options struct {
	addr, ca, cert, key, principal, token, in, output string
	insecure                                          bool
	batch                                             int
	timeout                                           time.Duration
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
	o := options{addr: addr, in: "-", output: "text", batch: 1000, timeout: 30 * time.Second,
		ca: os.Getenv("PSEUDO_CA"), cert: os.Getenv("PSEUDO_CERT"), key: os.Getenv("PSEUDO_KEY"),
		principal: os.Getenv("PSEUDO_PRINCIPAL"), token: os.Getenv("PSEUDO_TOKEN")}
	switch v := os.Getenv("PSEUDO_INSECURE"); v {
	case "", "0", "false":
	case "1", "true":
		o.insecure = true
	default:
		return usageError{"PSEUDO_INSECURE must be 1 or 0, not " + v}
	}
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
		fs.StringVar(&o.output, "o", o.output, "")
		fs.IntVar(&o.batch, "batch", o.batch, "")
		fs.DurationVar(&o.timeout, "timeout", o.timeout, "")
	}
	fs := flag.NewFlagSet("pseudo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	common(fs)
	if err := fs.Parse(args); err != nil {
		return parseError(err, stdout)
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
	if err := sub.Parse(endFlagsAtValues(sub, rest)); err != nil {
		return parseError(err, stdout)
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
	if o.output != "text" && o.output != "json" {
		return usageError{"-o must be text or json"}
	}

	conn, err := dial(&o)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := client.New(conn, client.WithMaxBatch(o.batch), client.WithCache(0), client.WithRetryPolicy(retryPolicy()))
	if o.principal != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-pseudonymizer-principal", o.principal)
	}
	if cmd == "domain" {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		d, err := c.Domain(cctx, sub.Arg(0))
		if err != nil {
			return callError(err, &o)
		}
		if o.output == "json" {
			return writeDomainJSON(stdout, d)
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
		results, err := paced(ctx, o.timeout, func(ctx context.Context) ([]string, error) {
			return process(ctx, c, cmd, *domain, *from, *to, identifier.Kind(*kind), chunk)
		})
		if err != nil {
			out.Flush()
			p.done()
			return callError(err, &o)
		}
		for i, r := range results {
			reason, isErr := strings.CutPrefix(r, "ERROR ")
			if isErr {
				failed++
			}
			if o.output == "json" {
				if err := writeLineJSON(out, lo+i+1, r, reason, isErr); err != nil {
					return err
				}
				continue
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

// retryPolicy is the client's policy for pseudo: one caller sending its
// batches one after the other, which the service's rate limit paces. A
// RESOURCE_EXHAUSTED with RetryInfo is waited out and retried as often as
// the per-call timeout allows (a 20,000-line file against the default rate
// of 1000 items/s spends most of its time so); no retry budget, which
// protects a service from many callers retrying at once, not from one.
func retryPolicy() client.RetryPolicy {
	p := client.DefaultRetryPolicy()
	p.BudgetTokens = 0
	return p
}

// maxRateWait caps the wait pseudo honours from one RetryInfo.
const maxRateWait = time.Minute

// paced runs f with a fresh timeout until it does not fail for the
// caller's rate limit: each RESOURCE_EXHAUSTED with a RetryInfo (left
// after the client's own retries) is waited out for the delay the service
// gives, so that pseudo goes at the pace the service allows, however long
// the input.
func paced(ctx context.Context, timeout time.Duration, f func(context.Context) ([]string, error)) ([]string, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := f(cctx)
		cancel()
		st := status.Convert(err)
		if err == nil || st.Code() != codes.ResourceExhausted {
			return res, err
		}
		var wait time.Duration
		found := false
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				wait, found = ri.GetRetryDelay().AsDuration(), true
			}
		}
		if !found {
			return nil, err // a message over the size limit: -batch is too large
		}
		t := time.NewTimer(min(max(wait, 10*time.Millisecond), maxRateWait))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// parseError is the error of a failed flag parse: -h prints the usage on
// stdout and succeeds.
func parseError(err error, stdout io.Writer) error {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{err.Error()}
}

// writeLineJSON writes the JSON Lines form of input value n's result.
func writeLineJSON(w io.Writer, n int, result, reason string, isErr bool) error {
	v := struct {
		Line   int    `json:"line"`
		Result string `json:"result,omitempty"`
		Error  string `json:"error,omitempty"`
	}{Line: n}
	if isErr {
		v.Error = reason
	} else {
		v.Result = result
	}
	return json.NewEncoder(w).Encode(v)
}

func writeDomainJSON(w io.Writer, d *client.DomainInfo) error {
	ops := make([]string, len(d.Operations))
	for i, op := range d.Operations {
		ops[i] = string(op)
	}
	return json.NewEncoder(w).Encode(struct {
		Name           string   `json:"name"`
		Audience       string   `json:"audience"`
		TTL            string   `json:"ttl"`
		ActiveKid      string   `json:"active_kid"`
		AcceptedKids   []string `json:"accepted_kids"`
		Operations     []string `json:"operations"`
		ConvertTargets []string `json:"convert_targets,omitempty"`
	}{d.Name, d.Audience, d.TTL.String(), d.ActiveKid, d.AcceptedKids, ops, d.ConvertTargets})
}

// callError describes a whole-call failure by its gRPC code and message
// (the service's messages carry no data), with a hint for the usual TLS
// mistakes.
func callError(err error, o *options) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("service: %s: %s%s", st.Code(), st.Message(), tlsHint(st.Message(), o))
	}
	return err
}

// tlsHint says what to change when a connection failed for TLS.
func tlsHint(msg string, o *options) string {
	switch {
	case strings.Contains(msg, "x509: certificate signed by unknown authority") ||
		strings.Contains(msg, "failed to verify certificate"):
		if o.ca == "" {
			return "\nhint: the service's certificate is not signed by a CA this system trusts: add -ca <file> (or PSEUDO_CA) with the service's CA certificate"
		}
		return "\nhint: the service's certificate is not signed by the CA of -ca " + o.ca + ": give the CA that signed it"
	case strings.Contains(msg, "x509: certificate is valid for"):
		return "\nhint: -addr does not match a name in the service's certificate: use the host name it was issued for"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "\nhint: the service speaks plaintext (a -dev service?): add -insecure (loopback only)"
	case o.insecure && (strings.Contains(msg, "server preface") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "frame too large") ||
		strings.Contains(msg, "EOF")):
		return "\nhint: the service may require TLS: drop -insecure and give -ca <file>"
	case !o.insecure && o.cert == "" && (strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset")):
		// With TLS 1.3 the server checks the client certificate after the
		// client considers the handshake done: a missing one shows up as
		// an alert or a closed connection on the first write.
		return "\nhint: the service may require a client certificate (mTLS): give -cert and -key (or PSEUDO_CERT, PSEUDO_KEY), or a bearer token with -token"
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "handshake"):
		return "\nhint: the TLS handshake failed: check -ca, and -cert/-key if the service wants a client certificate"
	}
	return ""
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
	fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d %.0f/s ETA %s ", strings.Repeat("#", filled), strings.Repeat(" ", width-filled),
		100*p.n/max(p.total, 1), p.n, p.total, rate, eta(p.total-p.n, rate))
}

// eta formats the time left for n items at rate items per second.
func eta(n int, rate float64) string {
	if n <= 0 {
		return "0s"
	}
	if rate <= 0 {
		return "?"
	}
	return (time.Duration(float64(n)/rate) * time.Second).Round(time.Second).String()
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}

// endFlagsAtValues returns args with "--" put before the first argument
// that starts with "-" but cannot be a flag of fs: the base64url point of
// a transit pseudonym starts with "-" one time in 64, and the pseudonym
// has a ':' (and its JWE '.') that no flag name has. The value of a flag
// ("-domain x") is never taken for one. A value that could be a flag name
// (a raw identifier "-x") still needs "--" before it, as usual.
func endFlagsAtValues(fs *flag.FlagSet, args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return args
		}
		name, _, inline := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			if strings.ContainsAny(name, ":.") {
				return append(append(append(make([]string, 0, len(args)+1), args[:i]...), "--"), args[i:]...)
			}
			return args // an unknown flag: Parse says so
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !inline && !(ok && b.IsBoolFlag()) {
			i++ // the flag's value
		}
	}
	return args
}

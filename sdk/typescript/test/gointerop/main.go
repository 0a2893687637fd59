// Command gointerop is the Go side of the TypeScript SDK's interoperability
// tests (sdk/typescript/test/integration): the Node tests run it to prepare
// a development key file, to open the transit pseudonyms the TypeScript
// client obtained with the Go owner SDK, to make owner transit forms for the
// TypeScript client to identify, to pseudonymize with the Go client SDK, and
// to parse text forms and NISS numbers with the Go packages, so that both
// implementations are compared on the same values. Requests and answers are
// JSON: a JSON array on stdin, a JSON array on stdout, one answer per value.
//
//	gointerop setup -data-dir DIR
//	gointerop open -data-dir DIR -domain D            (transit texts → at rest)
//	gointerop transit -data-dir DIR -domain D [-sub S] (at-rest texts → transit texts)
//	gointerop pseudonymize -addr HOST:PORT -domain D -principal P (NISS → transit texts)
//	gointerop parse                                   ({"niss":[…],"transit":[…],"atRest":[…]})
//	gointerop errors                                  (protoerr's table)
//	gointerop bench [-seconds N]                       (the client's CPU per item, as test/bench.js)
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// SecondDomain is the domain setup adds: a new version of keys.DemoDomain,
// into which the demo domain's owner may convert.
const SecondDomain = "demo_v2"

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gointerop:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: gointerop setup|open|transit|pseudonymize|parse|errors|bench [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "the pseudonymizer's -data-dir (development key file keys.json)")
	domain := fs.String("domain", keys.DemoDomain, "domain")
	sub := fs.String("sub", "", "transit: bind the transit forms to this caller principal")
	addr := fs.String("addr", "", "pseudonymize: the server's gRPC address (plaintext, development mode)")
	principal := fs.String("principal", "dev", "pseudonymize: the caller principal (development mode header)")
	seconds := fs.Float64("seconds", 1, "bench: seconds per measurement")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enc := json.NewEncoder(stdout)
	switch args[0] {
	case "setup":
		st, err := store(*dataDir, true)
		if err != nil {
			return err
		}
		if _, err := st.EnsureDemo(ctx); err != nil {
			return err
		}
		if _, err := st.Domain(ctx, SecondDomain); errors.Is(err, keys.ErrUnknownDomain) {
			if _, err := st.NewVersion(ctx, keys.DemoDomain, SecondDomain); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		names, err := st.Domains(ctx)
		if err != nil {
			return err
		}
		return enc.Encode(map[string]any{"domains": names})
	case "open":
		o, err := newOwner(ctx, *dataDir, *domain)
		if err != nil {
			return err
		}
		defer o.Close()
		var in []string
		if err := json.NewDecoder(stdin).Decode(&in); err != nil {
			return err
		}
		type opened struct {
			AtRest string `json:"atRest,omitempty"`
			Sub    string `json:"sub,omitempty"`
			Exp    int64  `json:"exp,omitempty"`
			Error  string `json:"error,omitempty"`
		}
		out := make([]opened, len(in))
		for i, s := range in {
			t, err := pseudonym.ParseTransit(s)
			if err != nil {
				out[i].Error = errName(err)
				continue
			}
			op, err := o.Open(ctx, t)
			if err != nil {
				out[i].Error = errName(err)
				continue
			}
			out[i] = opened{AtRest: op.Pseudonym.String(), Sub: op.Subject, Exp: op.Expiry.Unix()}
		}
		return enc.Encode(out)
	case "transit":
		o, err := newOwner(ctx, *dataDir, *domain)
		if err != nil {
			return err
		}
		defer o.Close()
		var in []string
		if err := json.NewDecoder(stdin).Decode(&in); err != nil {
			return err
		}
		var opts []owner.TransitOption
		if *sub != "" {
			opts = append(opts, owner.Subject(*sub))
		}
		out := make([]string, len(in))
		for i, s := range in {
			p, err := pseudonym.ParseAtRest(s)
			if err != nil {
				return fmt.Errorf("item %d: %v", i, err)
			}
			t, err := o.InTransit(p, opts...)
			if err != nil {
				return fmt.Errorf("item %d: %v", i, err)
			}
			out[i] = t.String()
		}
		return enc.Encode(out)
	case "pseudonymize":
		var in []string
		if err := json.NewDecoder(stdin).Decode(&in); err != nil {
			return err
		}
		cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		c := client.New(cc, client.WithCache(0))
		ids := make([][]byte, len(in))
		for i, s := range in {
			if ids[i], err = identifier.NISS(s); err != nil {
				return fmt.Errorf("item %d: %v", i, err)
			}
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "x-pseudonymizer-principal", *principal)
		ts, errs, err := c.PseudonymizeBatch(ctx, *domain, ids)
		if err != nil {
			return err
		}
		out := make([]string, len(in))
		for i, t := range ts {
			if errs[i] != nil {
				return fmt.Errorf("item %d: %v", i, errs[i])
			}
			out[i] = t.String()
		}
		return enc.Encode(out)
	case "parse":
		return parse(stdin, enc)
	case "bench":
		r, err := bench(*seconds, runtime.Version())
		if err != nil {
			return err
		}
		return enc.Encode(r)
	case "errors":
		type row struct {
			Text    string `json:"text"`
			Code    uint32 `json:"code"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
			PerItem bool   `json:"perItem"`
		}
		var out []row
		for _, e := range protoerr.Entries() {
			out = append(out, row{Text: e.Err.Error(), Code: uint32(e.Code), Reason: e.Reason, Message: e.Message, PerItem: e.PerItem})
		}
		return enc.Encode(out)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// parse answers, for each value, what the Go packages make of it.
func parse(stdin io.Reader, enc *json.Encoder) error {
	var in struct {
		NISS    []string `json:"niss"`
		Transit []string `json:"transit"`
		AtRest  []string `json:"atRest"`
	}
	if err := json.NewDecoder(stdin).Decode(&in); err != nil {
		return err
	}
	type answer struct {
		OK    bool   `json:"ok"`
		Value string `json:"value,omitempty"` // normalized NISS, or the point in hex
		Exp   int64  `json:"exp,omitempty"`
		Sub   string `json:"sub,omitempty"`
	}
	out := struct {
		NISS    []answer `json:"niss"`
		Transit []answer `json:"transit"`
		AtRest  []answer `json:"atRest"`
	}{make([]answer, len(in.NISS)), make([]answer, len(in.Transit)), make([]answer, len(in.AtRest))}
	for i, s := range in.NISS {
		if b, err := identifier.NISS(s); err == nil {
			out.NISS[i] = answer{OK: true, Value: string(b)}
		}
	}
	for i, s := range in.Transit {
		t, err := pseudonym.ParseTransit(s)
		if err != nil {
			continue
		}
		exp, _ := t.Expiry()
		sub, _ := t.Subject()
		out.Transit[i] = answer{OK: true, Value: hex.EncodeToString(t.Point[:]), Exp: exp.Unix(), Sub: sub}
	}
	for i, s := range in.AtRest {
		if p, err := pseudonym.ParseAtRest(s); err == nil {
			out.AtRest[i] = answer{OK: true, Value: hex.EncodeToString(p[:])}
		}
	}
	return enc.Encode(out)
}

func store(dataDir string, create bool) (*keys.FileStore, error) {
	if dataDir == "" {
		return nil, errors.New("-data-dir is required")
	}
	return keys.OpenFileStore(filepath.Join(dataDir, "keys.json"), create)
}

func newOwner(ctx context.Context, dataDir, domain string) (*owner.Owner, error) {
	st, err := store(dataDir, false)
	if err != nil {
		return nil, err
	}
	return owner.New(ctx, domain, st, owner.WithRefreshInterval(0))
}

// errName names an error by the protoerr sentinel it matches, as the
// TypeScript SDK names its errors.
func errName(err error) string {
	names := map[error]string{
		protoerr.ErrMalformedTransitInfo: "ErrMalformedTransitInfo",
		protoerr.ErrUnknownKid:           "ErrUnknownKid",
		protoerr.ErrBadTag:               "ErrBadTag",
		protoerr.ErrWrongAudience:        "ErrWrongAudience",
		protoerr.ErrNotYetValid:          "ErrNotYetValid",
		protoerr.ErrExpired:              "ErrExpired",
		protoerr.ErrSubjectMismatch:      "ErrSubjectMismatch",
		protoerr.ErrInvalidPoint:         "ErrInvalidPoint",
		pseudonym.ErrMalformedText:       "ErrMalformedText",
	}
	for sentinel, name := range names {
		if errors.Is(err, sentinel) {
			return name
		}
	}
	return err.Error()
}

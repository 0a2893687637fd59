package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// secrets are the values the service must never receive nor log:
// identifiers and pseudonyms (at rest, and the unblinded transit points).
type secrets struct {
	mu     sync.Mutex
	values map[string]string // raw value → what it is
}

func newSecrets() *secrets { return &secrets{values: map[string]string{}} }

func (s *secrets) add(what string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[string(b)]; !ok {
		s.values[string(b)] = what
	}
}

// niss records a NISS: normalized, formatted, and as typed.
func (s *secrets) niss(typed string) []byte {
	n, err := identifier.NISS(typed)
	if err != nil {
		panic(fmt.Sprintf("e2e: invalid test NISS: %v", err))
	}
	s.add("NISS (normalized)", n)
	s.add("NISS (formatted)", []byte(identifier.FormatNISS(n)))
	s.add("NISS (as typed)", []byte(typed))
	return n
}

func (s *secrets) atRest(what string, p pseudonym.AtRest) {
	s.add("pseudonym at rest ("+what+")", p[:])
}

func (s *secrets) transit(t *pseudonym.Transit) { s.add("transit point P_T", t.Point[:]) }

func (s *secrets) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.values)
}

// needle is one encoding of one secret.
type needle struct {
	text []byte
	what string
}

// needles returns every encoding of every secret searched for: raw, hex
// (lower and upper case), and base64 with both alphabets, padded or not.
// For base64, the value is also encoded after 0, 1 and 2 leading bytes,
// keeping only the characters that depend on the value alone: a value
// embedded at any offset of a longer base64 string is found.
func (s *secrets) needles() []needle {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []needle
	for v, what := range s.values {
		b := []byte(v)
		out = append(out,
			needle{b, what + " (raw)"},
			needle{[]byte(hex.EncodeToString(b)), what + " (hex)"},
			needle{[]byte(strings.ToUpper(hex.EncodeToString(b))), what + " (HEX)"},
		)
		for _, enc := range []struct {
			name string
			e    *base64.Encoding
		}{
			{"base64", base64.StdEncoding}, {"base64 unpadded", base64.RawStdEncoding},
			{"base64url", base64.URLEncoding}, {"base64url unpadded", base64.RawURLEncoding},
		} {
			out = append(out, needle{[]byte(enc.e.EncodeToString(b)), what + " (" + enc.name + ")"})
			for shift := 0; shift <= 2; shift++ {
				full := enc.e.EncodeToString(append(make([]byte, shift), b...))
				first := (8*shift + 5) / 6         // first character of value bits only
				last := (8 * (shift + len(b))) / 6 // characters fully inside the data
				out = append(out, needle{[]byte(full[first:last]), fmt.Sprintf("%s (%s at offset %d)", what, enc.name, shift)})
			}
		}
	}
	return out
}

// leaks returns a description of every secret found in data, in any of
// its encodings. It indexes the needles by their first 8 bytes, so that
// one pass over data suffices however many secrets there are.
func (s *secrets) leaks(name string, data []byte) []string {
	idx := map[uint64][]needle{}
	for _, n := range s.needles() {
		if len(n.text) < 8 {
			panic("e2e: a secret encoding shorter than 8 bytes")
		}
		k := binary.LittleEndian.Uint64(n.text)
		idx[k] = append(idx[k], n)
	}
	found := map[string]bool{}
	for i := 0; i+8 <= len(data); i++ {
		for _, n := range idx[binary.LittleEndian.Uint64(data[i:])] {
			if bytes.HasPrefix(data[i:], n.text) {
				found[fmt.Sprintf("%s: %s at byte %d", name, n.what, i)] = true
			}
		}
	}
	out := make([]string, 0, len(found))
	for f := range found {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// assertBlind fails the test if any capture holds a secret. It also
// checks that the search works, on a capture that holds one of them.
func assertBlind(t *testing.T, sec *secrets, captures map[string][]byte) {
	t.Helper()
	if sec.len() == 0 {
		t.Fatal("no secrets were recorded: the check would be vacuous")
	}
	for name, data := range captures {
		if len(data) == 0 {
			t.Errorf("capture %s is empty: the check would be vacuous", name)
		}
		for _, l := range sec.leaks(name, data) {
			t.Errorf("leak: %s", l)
		}
		t.Logf("capture %s: %d bytes searched for %d secrets", name, len(data), sec.len())
	}
	// The detector finds what it should: a formatted NISS, the base64url
	// text of a pseudonym embedded at an odd offset, and a hex point.
	var v string
	sec.mu.Lock()
	for k := range sec.values {
		v = k
		break
	}
	sec.mu.Unlock()
	for _, probe := range []string{
		"x" + v + "y",
		`{"msg":"` + base64.RawURLEncoding.EncodeToString(append([]byte{7}, v...)) + `"}`,
		"id=" + hex.EncodeToString([]byte(v)),
		base64.StdEncoding.EncodeToString(append([]byte{1, 2}, v...)),
	} {
		if len(sec.leaks("probe", []byte(probe))) == 0 {
			t.Errorf("the leak detector misses a secret in %q", probe)
		}
	}
}

// recorder is a client interceptor that records what the server receives
// (each request message as the protobuf codec serializes it, and the
// metadata sent with it) and what it answers.
type recorder struct {
	mu       sync.Mutex
	requests bytes.Buffer
	replies  bytes.Buffer
	calls    int
}

func (r *recorder) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	reqBytes, merr := proto.Marshal(req.(proto.Message))
	if merr != nil {
		return merr
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.requests.WriteString(method + "\n")
	for k, vs := range md {
		r.requests.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
	}
	r.requests.Write(reqBytes)
	r.requests.WriteByte('\n')
	if err == nil {
		if b, merr := proto.Marshal(reply.(proto.Message)); merr == nil {
			r.replies.Write(b)
			r.replies.WriteByte('\n')
		}
	}
	return err
}

// option is the dial option that installs the recorder.
func (r *recorder) option() grpc.DialOption { return grpc.WithChainUnaryInterceptor(r.unary) }

func (r *recorder) captured() (requests, replies []byte, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.requests.Bytes()), bytes.Clone(r.replies.Bytes()), r.calls
}

// tapProxy is a TCP proxy that records every byte each way.
type tapProxy struct {
	lis      net.Listener
	target   string
	mu       sync.Mutex
	toServer bytes.Buffer
	toClient bytes.Buffer
	wg       sync.WaitGroup
}

func startTap(t testing.TB, target string) *tapProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tapProxy{lis: lis, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { _ = lis.Close(); p.wg.Wait() })
	return p
}

func (p *tapProxy) addr() string { return p.lis.Addr().String() }

func (p *tapProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.wg.Add(2)
		go p.pipe(s, c, &p.toServer)
		go p.pipe(c, s, &p.toClient)
	}
}

// pipe copies from src to dst and records the bytes in log.
func (p *tapProxy) pipe(dst, src net.Conn, log *bytes.Buffer) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			log.Write(buf[:n])
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (p *tapProxy) captured() (toServer, toClient []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.toServer.Bytes()), bytes.Clone(p.toClient.Bytes())
}

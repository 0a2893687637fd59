package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// noForwardingHeader asks a standby node to answer itself (with a redirect
// to the active node) instead of forwarding the request to the active node.
const noForwardingHeader = "X-Vault-No-Request-Forwarding"

// splitAddresses splits a comma-separated list of Vault node addresses.
// Every address must be an http or https URL with a host (a Unix socket
// cannot be part of a list).
func splitAddresses(s string) ([]*url.URL, error) {
	var nodes []*url.URL
	for a := range strings.SplitSeq(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("vault: address %q: %v", a, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("vault: address %q: want http(s)://host:port", a)
		}
		nodes = append(nodes, u)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("vault: no address in %q", s)
	}
	return nodes, nil
}

// failover is the http.RoundTripper of a store given several Vault nodes.
// The api.Client builds every URL on the first node's address; failover
// sends each request to the node that answered last and, when that node
// fails (a network error, a 5xx: sealed, no active node, …) or is a standby
// (requests carry noForwardingHeader, so a standby answers with a redirect
// to the active node), to the next ones, each at most once per request. It
// then sticks to the node that answered. Requests to other hosts pass
// through.
type failover struct {
	next  http.RoundTripper
	base  *url.URL   // what the api.Client's URLs start with: nodes[0]
	nodes []*url.URL // in the configured order
	cur   atomic.Int32
	log   *slog.Logger
}

func newFailover(next http.RoundTripper, nodes []*url.URL, log *slog.Logger) *failover {
	return &failover{next: next, base: nodes[0], nodes: nodes, log: log}
}

// nodesError is the error of a request that no node answered.
type nodesError struct {
	nodes []string
	errs  []error
}

func (e *nodesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no Vault node answered (%d tried)", len(e.nodes))
	for i, n := range e.nodes {
		fmt.Fprintf(&b, "; %s: %v", n, e.errs[i])
	}
	return b.String()
}

func (e *nodesError) Unwrap() []error { return e.errs }

// errStandby is why a node that answered with a redirect was skipped.
var errStandby = errors.New("standby node (not active)")

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != f.base.Scheme || req.URL.Host != f.base.Host {
		return f.next.RoundTrip(req)
	}
	// The body is sent again to each node: read it once (Vault requests
	// are small).
	var payload []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		payload, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	ctx := req.Context()
	start := int(f.cur.Load())
	fails := &nodesError{}
	var last *http.Response // the last 5xx answer, returned if no node does better
	for i := range f.nodes {
		if err := ctx.Err(); err != nil {
			closeBody(last)
			return nil, err
		}
		n := (start + i) % len(f.nodes)
		resp, err := f.next.RoundTrip(f.request(req, f.nodes[n], payload))
		var why error
		switch {
		case err != nil:
			if ctx.Err() != nil {
				closeBody(last)
				return nil, err
			}
			why = err
		case resp.StatusCode >= 500:
			why = errors.New(resp.Status)
		case isRedirect(resp.StatusCode):
			why = fmt.Errorf("%w, redirects to %s", errStandby, resp.Header.Get("Location"))
		default:
			closeBody(last)
			if n != start && f.cur.CompareAndSwap(int32(start), int32(n)) {
				f.log.Info("vault: now using another node", "node", f.nodes[n].String(), "previous", f.nodes[start].String())
			}
			return resp, nil
		}
		fails.nodes = append(fails.nodes, f.nodes[n].String())
		fails.errs = append(fails.errs, why)
		if resp != nil {
			closeBody(last)
			last = nil
			if resp.StatusCode >= 500 {
				last = resp
			} else {
				closeBody(resp)
			}
		}
	}
	f.log.Debug("vault: no node answered", "err", fails)
	if last != nil {
		// Vault's own error messages say more than ours.
		return last, nil
	}
	return nil, fails
}

// request is req aimed at node.
func (f *failover) request(req *http.Request, node *url.URL, payload []byte) *http.Request {
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host = node.Scheme, node.Host
	r.Host = ""
	r.Header.Set(noForwardingHeader, "true")
	if payload != nil {
		r.Body = io.NopCloser(bytes.NewReader(payload))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
		r.ContentLength = int64(len(payload))
	}
	return r
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

func closeBody(resp *http.Response) {
	if resp == nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// failoverTransport wraps the api client's transport t for several nodes.
// A node that does not answer the connection must not use up the whole
// request timeout: connecting to one node is bounded by a share of it.
func failoverTransport(t *http.Transport, nodes []*url.URL, timeout time.Duration, log *slog.Logger) *failover {
	dial := &net.Dialer{
		Timeout:   max(time.Second, min(10*time.Second, timeout/time.Duration(len(nodes)))),
		KeepAlive: 30 * time.Second,
	}
	t.DialContext = dial.DialContext
	return newFailover(t, nodes, log)
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
)

// h2Conn is a raw HTTP/2 client connection over TLS, for what grpc-go's
// client will not send: more streams than the server's
// MAX_CONCURRENT_STREAMS (grpc-go queues them), or gRPC frames that lie
// about their length. Writes are serialized; one goroutine reads.
type h2Conn struct {
	conn net.Conn
	fr   *http2.Framer
	bw   *bufio.Writer
	wmu  sync.Mutex
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// dialH2 connects with TLS (ALPN "h2") and writes the client preface and
// an empty SETTINGS frame.
func dialH2(ctx context.Context, addr string, cfg *tls.Config) (*h2Conn, error) {
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		_ = nc.Close()
		return nil, fmt.Errorf("ALPN negotiated %q, not h2", p)
	}
	c := &h2Conn{conn: nc, bw: bufio.NewWriterSize(nc, 64<<10)}
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 64<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		_ = nc.Close()
		return nil, err
	}
	if err := c.fr.WriteSettings(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *h2Conn) Close() error { return c.conn.Close() }

// headers opens stream id with a gRPC request's headers and extra ones
// (not flushed). A header block over the default frame size is split into
// CONTINUATION frames.
func (c *h2Conn) headers(id uint32, path string, endStream bool, extra ...hpack.HeaderField) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	fields := append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "localhost"}, {Name: ":path", Value: path},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...)
	for _, f := range fields {
		if err := c.enc.WriteField(f); err != nil {
			return err
		}
	}
	const maxFrame = 16 << 10 // SETTINGS_MAX_FRAME_SIZE's initial value
	block := c.hbuf.Bytes()
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0,
	})
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		err = c.fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

// data writes a DATA frame (not flushed).
func (c *h2Conn) data(id uint32, b []byte, endStream bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.fr.WriteData(id, endStream, b)
}

func (c *h2Conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// readLoop reads frames until an error or until handle returns false. It
// acknowledges SETTINGS and answers PINGs itself, and hands every frame to
// handle (which must not keep it: the framer reuses it).
func (c *h2Conn) readLoop(handle func(http2.Frame) bool) error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		// Acknowledgements are written by goroutines of their own: a
		// writer blocked on a full connection must not stop the reading
		// that unblocks it.
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				go func() { _ = c.control(c.fr.WriteSettingsAck) }()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				go func() { _ = c.control(func() error { return c.fr.WritePing(true, data) }) }()
			}
		}
		if !handle(f) {
			return nil
		}
	}
}

func (c *h2Conn) control(write func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// grpcFrame is a gRPC length-prefixed message: flag 0, then length.
func grpcFrame(length uint32, body []byte) []byte {
	b := []byte{0, byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length)}
	return append(b, body...)
}

// trailerOutcome reads the gRPC status of a response's trailers.
func trailerOutcome(fields []hpack.HeaderField) (hostileOutcome, bool) {
	var code, details, msg string
	found := false
	for _, f := range fields {
		switch f.Name {
		case "grpc-status":
			code, found = f.Value, true
		case "grpc-status-details-bin":
			details = f.Value
		case "grpc-message":
			msg = f.Value
		}
	}
	if !found {
		return hostileOutcome{}, false
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		return hostileOutcome{code: codes.Unknown, level: "stream", note: "grpc-status " + code}, true
	}
	out := hostileOutcome{code: codes.Code(n), level: "call", note: fmt.Sprintf("%q", msg)}
	if details != "" {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(details, "="))
		var sp spb.Status
		if err == nil && proto.Unmarshal(b, &sp) == nil {
			out.reason = rpcstatus.ReasonOf(status.FromProto(&sp))
		}
	}
	return out, true
}

// rstCode is the gRPC code a client reports for an RST_STREAM (gRPC's
// HTTP/2 error code mapping).
func rstCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	}
	return codes.Internal
}

// h2Unary sends one unary gRPC call on a new raw connection as the given
// DATA payload (gRPC framing included), then ends the stream, and returns
// the status of the response.
func h2Unary(ctx context.Context, addr string, cfg *tls.Config, path string, payload []byte, extra ...hpack.HeaderField) (hostileOutcome, error) {
	c, err := dialH2(ctx, addr, cfg)
	if err != nil {
		return hostileOutcome{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if err := c.headers(1, path, false, extra...); err != nil {
		return hostileOutcome{}, err
	}
	if err := c.data(1, payload, true); err != nil {
		return hostileOutcome{}, err
	}
	if err := c.flush(); err != nil {
		return hostileOutcome{}, err
	}
	var out hostileOutcome
	var got bool
	err = c.readLoop(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				out, got = trailerOutcome(f.Fields)
				return !got
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				out = hostileOutcome{code: rstCode(f.ErrCode), level: "rst", note: f.ErrCode.String()}
				got = true
				return false
			}
		case *http2.GoAwayFrame:
			out = hostileOutcome{code: codes.Unavailable, level: "rst", note: "GOAWAY " + f.ErrCode.String()}
			got = true
			return false
		}
		return true
	})
	switch {
	case got:
		return out, nil
	case errors.Is(err, io.EOF):
		// The server closed the connection without a word: what a gRPC
		// client reports as UNAVAILABLE.
		return hostileOutcome{code: codes.Unavailable, level: "conn", note: "connection closed"}, nil
	case err == nil:
		err = errors.New("no response")
	}
	return hostileOutcome{}, fmt.Errorf("reading the response: %w", err)
}

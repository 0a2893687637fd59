package grpcserver

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// The work done for a request before it is trusted is bounded in three
// steps, each before the next one costs anything:
//
//  1. Authentication runs first in the interceptor chain, on the call's
//     headers alone, and the request body is not read before it succeeds:
//     unary method handlers are wrapped so that the body is received lazily,
//     by the decoding interceptor that comes after authentication, and a
//     stream's messages are only read when its handler asks. An
//     unauthenticated call ends at once; its body, never read, is dropped
//     with the stream. (Authentication is not done in a grpc.InTapHandle:
//     grpc-go leaks the timer of a call refused there until the caller's
//     grpc-timeout fires, and the tap runs on the connection's reader
//     goroutine.)
//  2. The body, at most MaxRecvMsgSize bytes (derived from the maximum batch
//     size), is kept as bytes (a codec that does not decode requests of
//     pseudonymizer.v1), and its items are counted on the wire: more than
//     the maximum batch size fails with BATCH_TOO_LARGE before a single item
//     is allocated, and before any rate accounting.
//  3. Only then is it decoded; a body that does not decode (malformed
//     protobuf, invalid UTF-8, an item id over MaxItemIDLen)
//     fails with INVALID_ARGUMENT, ERROR_REASON_MALFORMED_REQUEST, and is
//     audited like every other call.
//
// A body the gRPC library itself refuses while receiving it (over the size
// limit: RESOURCE_EXHAUSTED; a truncated frame, or zero or two messages on a
// unary call: INTERNAL, written by the library before any service code can
// answer) is still audited and counted, with the status the caller got.

// perItemBytes bounds the encoding of one identify or convert item: its id,
// point and transitInfo, with their tags and lengths.
const perItemBytes = MaxItemIDLen + point.Size + transit.MaxLen + 32

// MaxRecvMsgSizeFor is the largest request a server with the given maximum
// batch size needs to accept: every item at its largest, plus the domain
// names.
func MaxRecvMsgSizeFor(maxBatch int) int {
	return 1024 + maxBatch*perItemBytes
}

// rawRequest receives a request body undecoded.
type rawRequest struct{ b []byte }

// codec is the proto codec, except that it leaves a *rawRequest undecoded.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2("proto")} }

// Unmarshal implements encoding.CodecV2.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawRequest); ok {
		r.b = data.Materialize()
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// decoder decodes the requests of pseudonymizer.v1 within the limits.
type decoder struct{ maxBatch int }

// decode counts the items of b on the wire, then decodes it into m.
func (d *decoder) decode(b []byte, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return ErrMalformedRequest
	}
	md := msg.ProtoReflect().Descriptor()
	n, err := countItems(b, md, 0)
	if err != nil {
		return err
	}
	if n > d.maxBatch {
		return &BatchTooLargeError{Max: d.maxBatch}
	}
	if err := proto.Unmarshal(b, msg); err != nil {
		return ErrMalformedRequest
	}
	if !idsWithin(msg.ProtoReflect(), MaxItemIDLen) {
		return ErrMalformedRequest
	}
	return nil
}

// countItems counts the occurrences of the "items" field of md in b, and
// of the items of each "request" field (stream messages), which protobuf
// merges however many times it appears.
func countItems(b []byte, md protoreflect.MessageDescriptor, depth int) (int, error) {
	if depth > 1 {
		return 0, nil
	}
	fields := md.Fields()
	items, req := fields.ByName("items"), fields.ByName("request")
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, ErrMalformedRequest
		}
		b = b[l:]
		vl := protowire.ConsumeFieldValue(num, typ, b)
		if vl < 0 {
			return 0, ErrMalformedRequest
		}
		switch {
		case items != nil && num == items.Number():
			n++
		case req != nil && num == req.Number() && typ == protowire.BytesType:
			v, _ := protowire.ConsumeBytes(b)
			k, err := countItems(v, req.Message(), depth+1)
			if err != nil {
				return 0, err
			}
			n += k
		}
		b = b[vl:]
	}
	return n, nil
}

// idsWithin reports whether every item id of a decoded request is at most
// max bytes long.
func idsWithin(m protoreflect.Message, max int) bool {
	fields := m.Descriptor().Fields()
	if req := fields.ByName("request"); req != nil && m.Has(req) {
		return idsWithin(m.Get(req).Message(), max)
	}
	items := fields.ByName("items")
	if items == nil || !items.IsList() {
		return true
	}
	list := m.Get(items).List()
	for i := range list.Len() {
		it := list.Get(i).Message()
		if id := it.Descriptor().Fields().ByName("id"); id != nil && len(it.Get(id).String()) > max {
			return false
		}
	}
	return true
}

// rawKey carries, from a unary method handler to the decoding
// interceptor, the function that receives the request body.
type rawKey struct{}

// lazyBody receives a unary request's body on demand.
type lazyBody struct{ dec func(any) error }

// deferDecoding wraps the unary method handlers of a service so that the
// request body is not read by the handler wrapper but by the decoding
// interceptor, after authentication (and after the audit interceptor, so
// that a malformed request is audited).
func deferDecoding(desc grpc.ServiceDesc) *grpc.ServiceDesc {
	methods := make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		h := m.Handler
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			if icpt == nil {
				return h(srv, ctx, dec, icpt)
			}
			ctx = context.WithValue(ctx, rawKey{}, &lazyBody{dec: dec})
			return h(srv, ctx, func(any) error { return nil }, icpt)
		}
		methods[i] = m
	}
	desc.Methods = methods
	return &desc
}

func (d *decoder) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if lb, ok := ctx.Value(rawKey{}).(*lazyBody); ok {
			raw := &rawRequest{}
			if err := lb.dec(raw); err != nil {
				return nil, err // already answered by the library
			}
			if err := d.decode(raw.b, req); err != nil {
				return nil, Status(err).Err()
			}
		}
		return handler(ctx, req)
	}
}

// errIdle ends a stream on which the caller sent nothing for too long.
func errIdle() error {
	return rpcstatus.Error(codes.DeadlineExceeded, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
		"stream idle for too long: no message received")
}

func (d *decoder) streamInterceptor(idle time.Duration, log func(*recovered.Panic)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &guardedStream{ServerStream: ss, d: d, idle: idle, log: log})
	}
}

// guardedStream reads each stream message as bytes on a goroutine of its
// own, only when the handler asks for one (nothing is read ahead: a caller
// that stops reading its answers pins no request), so that RecvMsg can give
// up after the idle timeout; it decodes the message within the limits on
// the handler's goroutine.
type guardedStream struct {
	grpc.ServerStream
	d    *decoder
	idle time.Duration
	log  func(*recovered.Panic)
	want chan struct{}
	msgs chan received
	// idleTimer is reused from message to message (Go 1.23 timers: Reset
	// after Stop never sees a stale expiry).
	idleTimer *time.Timer
}

type received struct {
	b   []byte
	err error
}

// RecvMsg implements grpc.ServerStream.
func (s *guardedStream) RecvMsg(m any) error {
	ctx := s.Context()
	if s.msgs == nil {
		s.want = make(chan struct{}, 1)
		s.msgs = make(chan received, 1)
		go s.receive(ctx)
	}
	s.want <- struct{}{} // never blocks: one request at a time
	if s.idleTimer == nil {
		s.idleTimer = time.NewTimer(s.idle)
	} else {
		s.idleTimer.Reset(s.idle)
	}
	defer s.idleTimer.Stop()
	select {
	case r := <-s.msgs:
		return s.take(r, m)
	case <-s.idleTimer.C:
		return errIdle()
	case <-ctx.Done():
		// A message or error that arrived with the cancellation wins: it
		// says what happened.
		select {
		case r := <-s.msgs:
			return s.take(r, m)
		default:
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (s *guardedStream) take(r received, m any) error {
	if r.err != nil {
		return r.err
	}
	if err := s.d.decode(r.b, m); err != nil {
		return Status(err).Err()
	}
	return nil
}

// receive reads one message each time RecvMsg asks, until the stream fails
// or ends; the stream's context ends when the handler returns, and with it
// this goroutine. After an idle timeout the handler returns, so a read still
// pending ends with the stream.
func (s *guardedStream) receive(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.log(recovered.Describe(p))
			select {
			case s.msgs <- received{err: rpcstatus.Internal().Err()}:
			default:
			}
		}
	}()
	for {
		select {
		case <-s.want:
		case <-ctx.Done():
			return
		}
		raw := &rawRequest{}
		err := s.ServerStream.RecvMsg(raw)
		s.msgs <- received{b: raw.b, err: err} // buffered, and RecvMsg took the last one
		if err != nil {
			return
		}
	}
}

// healthCheck is the only method callable without credentials on the
// authenticated port: a probe's single request and answer. Watch, a stream
// that would hold a connection for as long as the caller likes, needs
// credentials like everything else.
const healthCheck = "/grpc.health.v1.Health/Check"

// authenticate is the authentication interceptor: it identifies the caller
// from the call's headers (internal/auth), before anything reads the body,
// and records the principal in the audit record.
func authenticate(a *auth.Authenticator) func(ctx context.Context) (context.Context, error) {
	return func(ctx context.Context) (context.Context, error) {
		ctx, err := a.Authenticate(ctx)
		if err != nil {
			return nil, err
		}
		p, _ := auth.Principal(ctx)
		audit.FromContext(ctx).SetPrincipal(p)
		return ctx, nil
	}
}

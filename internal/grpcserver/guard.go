package grpcserver

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
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
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// The work done for a request before it is trusted is bounded in three
// steps, each before the next one costs anything:
//
//  1. Authentication runs in the transport's tap (grpc.InTapHandle), on the
//     call's headers alone: an unauthenticated call is refused before its
//     body is read, before a goroutine or a message buffer is given to it.
//  2. The body, at most MaxRecvMsgSize bytes (derived from the maximum batch
//     size), is kept as bytes (a codec that does not decode requests of
//     pseudonymizer.v1), and its items are counted on the wire: more than
//     the maximum batch size fails with BATCH_TOO_LARGE before a single item
//     is allocated, and before any rate accounting.
//  3. Only then is it decoded; a body that does not decode (malformed
//     protobuf, invalid UTF-8, an item id over pseudonymizer.MaxItemIDLen)
//     fails with INVALID_ARGUMENT, ERROR_REASON_MALFORMED_REQUEST, and is
//     audited like every other call.

// perItemBytes bounds the encoding of one identify or convert item: its id,
// point and transitInfo, with their tags and lengths.
const perItemBytes = pseudonymizer.MaxItemIDLen + point.Size + transit.MaxLen + 32

// MaxRecvMsgSizeFor is the largest request a server with the given maximum
// batch size needs to accept: every item at its largest, plus the domain
// names.
func MaxRecvMsgSizeFor(maxBatch int) int {
	return 1024 + maxBatch*perItemBytes
}

// rawRequest receives a request body undecoded. err is the error of
// receiving it (too large, truncated), already answered to the caller by
// the gRPC library, and carried through the interceptors so that the call
// is audited and counted all the same.
type rawRequest struct {
	b   []byte
	err error
}

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
		return pseudonymizer.ErrMalformedRequest
	}
	md := msg.ProtoReflect().Descriptor()
	n, err := countItems(b, md, 0)
	if err != nil {
		return err
	}
	if n > d.maxBatch {
		return &pseudonymizer.BatchTooLargeError{Max: d.maxBatch}
	}
	if err := proto.Unmarshal(b, msg); err != nil {
		return pseudonymizer.ErrMalformedRequest
	}
	if !idsWithin(msg.ProtoReflect(), pseudonymizer.MaxItemIDLen) {
		return pseudonymizer.ErrMalformedRequest
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
			return 0, pseudonymizer.ErrMalformedRequest
		}
		b = b[l:]
		vl := protowire.ConsumeFieldValue(num, typ, b)
		if vl < 0 {
			return 0, pseudonymizer.ErrMalformedRequest
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

// rawKey carries the undecoded body of a unary call from its method
// handler to the guard interceptor.
type rawKey struct{}

// deferDecoding wraps the unary method handlers of a service so that the
// request is received as bytes and decoded by the guard interceptor (after
// the audit interceptor, so that a malformed request is audited).
func deferDecoding(desc grpc.ServiceDesc) *grpc.ServiceDesc {
	methods := make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		h := m.Handler
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			raw := &rawRequest{}
			raw.err = dec(raw)
			if raw.err != nil && icpt == nil {
				return nil, raw.err
			}
			ctx = context.WithValue(ctx, rawKey{}, raw)
			return h(srv, ctx, func(any) error { return nil }, icpt)
		}
		methods[i] = m
	}
	desc.Methods = methods
	return &desc
}

func (d *decoder) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if raw, ok := ctx.Value(rawKey{}).(*rawRequest); ok {
			if raw.err != nil {
				return nil, raw.err
			}
			err := d.decode(raw.b, req)
			raw.b = nil
			if err != nil {
				return nil, pseudonymizer.Status(err).Err()
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

// guardedStream receives each stream message as bytes on a goroutine of
// its own, so that RecvMsg can give up after the idle timeout, and decodes
// it within the limits on the handler's goroutine.
type guardedStream struct {
	grpc.ServerStream
	d    *decoder
	idle time.Duration
	log  func(*recovered.Panic)
	msgs chan received
}

type received struct {
	b   []byte
	err error
}

// RecvMsg implements grpc.ServerStream.
func (s *guardedStream) RecvMsg(m any) error {
	ctx := s.Context()
	if s.msgs == nil {
		// One message of read-ahead: the receiver never blocks on handing
		// over an error, so the handler sees why the stream failed.
		s.msgs = make(chan received, 1)
		go s.receive(ctx)
	}
	t := time.NewTimer(s.idle)
	defer t.Stop()
	select {
	case r := <-s.msgs:
		return s.take(r, m)
	case <-t.C:
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
		return pseudonymizer.Status(err).Err()
	}
	return nil
}

// receive reads the stream until it fails or ends; the stream's context
// ends when the handler returns, and with it this goroutine.
func (s *guardedStream) receive(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.log(recovered.Describe(p))
			select {
			case s.msgs <- received{err: rpcstatus.Internal().Err()}:
			case <-ctx.Done():
			}
		}
	}()
	for {
		raw := &rawRequest{}
		err := s.ServerStream.RecvMsg(raw)
		r := received{b: raw.b, err: err}
		select {
		case s.msgs <- r: // room in the buffer: never lost to a cancellation
		default:
			select {
			case s.msgs <- r:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// healthService is the only service callable without credentials.
const healthService = "grpc.health.v1.Health"

// serviceOf returns the service of a full method name "/svc/method".
func serviceOf(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i]
	}
	return s
}

// tapAuthenticate authenticates every call but health checks from its
// headers, before the transport reads its body: a refused call costs no
// decoding, no goroutine and no message buffer. It is audited.
func tapAuthenticate(a *auth.Authenticator, auditor *audit.Logger) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if serviceOf(info.FullMethodName) == healthService {
			return ctx, nil
		}
		actx, err := a.Authenticate(ctx)
		if err != nil {
			auditor.Refused(ctx, info.FullMethodName, err)
			return nil, err
		}
		return actx, nil
	}
}

// requirePrincipal is the authentication interceptor: the tap already
// authenticated the call; it records the principal in the audit record and
// refuses a call without one (which the tap would have refused).
func requirePrincipal(ctx context.Context) (context.Context, error) {
	p, ok := auth.Principal(ctx)
	if !ok {
		return nil, rpcstatus.Error(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "unauthenticated")
	}
	audit.FromContext(ctx).SetPrincipal(p)
	return ctx, nil
}

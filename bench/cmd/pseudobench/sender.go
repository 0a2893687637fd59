package main

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// sender is one caller's way of sending a request and waiting for its
// answer: a unary call, or one message on the caller's own stream.
type sender interface {
	send(req any) (items int, failed []codes.Code, err error)
	close()
}

// newSender returns the sender of one caller of a run.
func newSender(ctx context.Context, p loadParams, api pb.PseudonymizerClient) sender {
	cctx := p.convertCtx
	if cctx == nil {
		cctx = ctx
	}
	if p.sdk != nil {
		return p.sdk.newSender(ctx, p.timeout)
	}
	if !p.stream {
		return &unarySender{ctx: ctx, convertCtx: cctx, api: api, timeout: p.timeout}
	}
	// A stream carries one RPC: its first request says which.
	if len(p.reqs) == 0 {
		panic("pseudobench: no requests")
	}
	switch p.reqs[0].(type) {
	case *pb.IdentifyRequest:
		return &streamSender[pb.IdentifyStreamRequest, pb.IdentifyStreamResponse]{
			ctx: ctx, timeout: p.timeout, open: api.IdentifyStream,
			wrap: func(r any) *pb.IdentifyStreamRequest {
				return &pb.IdentifyStreamRequest{Request: r.(*pb.IdentifyRequest)}
			},
			unwrap: func(r *pb.IdentifyStreamResponse) any { return r.GetResponse() },
		}
	case *pb.ConvertToRequest:
		return &streamSender[pb.ConvertToStreamRequest, pb.ConvertToStreamResponse]{
			ctx: cctx, timeout: p.timeout, open: api.ConvertToStream,
			wrap: func(r any) *pb.ConvertToStreamRequest {
				return &pb.ConvertToStreamRequest{Request: r.(*pb.ConvertToRequest)}
			},
			unwrap: func(r *pb.ConvertToStreamResponse) any { return r.GetResponse() },
		}
	default:
		return &streamSender[pb.PseudonymizeStreamRequest, pb.PseudonymizeStreamResponse]{
			ctx: ctx, timeout: p.timeout, open: api.PseudonymizeStream,
			wrap: func(r any) *pb.PseudonymizeStreamRequest {
				return &pb.PseudonymizeStreamRequest{Request: r.(*pb.PseudonymizeRequest)}
			},
			unwrap: func(r *pb.PseudonymizeStreamResponse) any { return r.GetResponse() },
		}
	}
}

// unarySender makes one unary call per request.
type unarySender struct {
	ctx, convertCtx context.Context
	api             pb.PseudonymizerClient
	timeout         time.Duration
}

func (s *unarySender) send(req any) (int, []codes.Code, error) {
	var (
		resp any
		err  error
	)
	switch r := req.(type) {
	case *pb.PseudonymizeRequest:
		ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
		resp, err = s.api.Pseudonymize(ctx, r)
		cancel()
	case *pb.IdentifyRequest:
		ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
		resp, err = s.api.Identify(ctx, r)
		cancel()
	case *pb.ConvertToRequest:
		ctx, cancel := context.WithTimeout(s.convertCtx, s.timeout)
		resp, err = s.api.ConvertTo(ctx, r)
		cancel()
	default:
		panic("pseudobench: unexpected request")
	}
	if err != nil {
		return 0, nil, err
	}
	return results(req, resp)
}

func (*unarySender) close() {}

// streamSender sends each request as one message on a bidirectional stream
// and waits for its answer before the next: the latency of a message is
// that of a unary call without the call's set-up. The stream is opened at
// the first message (in the warm-up) and again after an error. A message
// not answered within the timeout ends the stream with DeadlineExceeded.
type streamSender[Req, Resp any] struct {
	ctx     context.Context
	timeout time.Duration
	open    func(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Resp], error)
	wrap    func(any) *Req
	unwrap  func(*Resp) any

	st     grpc.BidiStreamingClient[Req, Resp]
	cancel context.CancelFunc
}

var errTimeout = status.Error(codes.DeadlineExceeded, "pseudobench: no answer on the stream within -timeout")

func (s *streamSender[Req, Resp]) send(req any) (int, []codes.Code, error) {
	if s.st == nil {
		ctx, cancel := context.WithCancel(s.ctx)
		st, err := s.open(ctx)
		if err != nil {
			cancel()
			return 0, nil, err
		}
		s.st, s.cancel = st, cancel
	}
	cancel, fired := s.cancel, make(chan struct{})
	t := time.AfterFunc(s.timeout, func() {
		cancel()
		close(fired)
	})
	err := s.st.Send(s.wrap(req))
	var resp *Resp
	if err == nil || errors.Is(err, io.EOF) {
		// After io.EOF from Send, Recv returns the stream's status.
		resp, err = s.st.Recv()
	}
	switch {
	case !t.Stop():
		// The stream is cancelled (or about to be), answered or not.
		<-fired
		err = errTimeout
	case errors.Is(err, io.EOF):
		err = status.Error(codes.Unavailable, "pseudobench: the server ended the stream")
	}
	if err != nil {
		s.reset()
		return 0, nil, err
	}
	return results(req, s.unwrap(resp))
}

// reset drops the stream: the next message opens another.
func (s *streamSender[Req, Resp]) reset() {
	if s.cancel != nil {
		s.cancel()
	}
	s.st, s.cancel = nil, nil
}

// close ends the stream as a client should: CloseSend, then Recv until the
// server's end of the stream (io.EOF), within the timeout.
func (s *streamSender[Req, Resp]) close() {
	if s.st == nil {
		return
	}
	t := time.AfterFunc(s.timeout, s.cancel)
	defer t.Stop()
	if s.st.CloseSend() == nil {
		for {
			if _, err := s.st.Recv(); err != nil {
				break
			}
		}
	}
	s.reset()
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

func TestNilRecord(t *testing.T) {
	var r *Record // handlers called without the interceptor
	r.SetPrincipal("p")
	r.AddDomain("d")
	r.AddItems(3)
	r.AddItemError("x")
	if FromContext(context.Background()) != nil {
		t.Fatal("a record out of nowhere")
	}
}

func TestUnaryRecord(t *testing.T) {
	var buf bytes.Buffer
	var got *Summary
	l := NewLogger(slog.New(slog.NewJSONHandler(&buf, nil)), func(s *Summary) { got = s })
	handler := func(ctx context.Context, req any) (any, error) {
		r := FromContext(ctx)
		r.SetPrincipal("alice")
		r.AddDomain("d_v1")
		r.AddDomain("d_v1")
		r.AddItems(4)
		r.AddItemError("ERROR_REASON_EXPIRED")
		r.AddItemError("ERROR_REASON_EXPIRED")
		return nil, rpcstatus.Error(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED, "permission denied")
	}
	_, err := l.UnaryServerInterceptor()(context.Background(), "request", &grpc.UnaryServerInfo{FullMethod: "/pseudonymizer.v1.Pseudonymizer/Identify"}, handler)
	if err == nil {
		t.Fatal("the handler's error was lost")
	}
	if got == nil || got.Operation() != "Identify" || got.Principal != "alice" || len(got.Domains) != 1 ||
		got.Items != 4 || got.FailedItems() != 2 || got.Code != codes.PermissionDenied ||
		got.Reason != "ERROR_REASON_OPERATION_NOT_ALLOWED" {
		t.Fatalf("summary %+v", got)
	}
	out := buf.String()
	for _, want := range []string{`"level":"WARN"`, `"principal":"alice"`, `"reason":"ERROR_REASON_OPERATION_NOT_ALLOWED"`, `"item_error_reasons":{"ERROR_REASON_EXPIRED":2}`} {
		if !strings.Contains(out, want) {
			t.Errorf("record lacks %s: %s", want, out)
		}
	}
	if strings.Contains(out, "permission denied") || strings.Contains(out, "request") {
		t.Errorf("the record holds a message or the request: %s", out)
	}
}

func TestReasonOfPlainError(t *testing.T) {
	if rpcstatus.Reason(errors.New("x")) != "" || rpcstatus.Reason(nil) != "" {
		t.Fatal("reason of a plain error")
	}
}

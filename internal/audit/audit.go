// Package audit writes one structured log record per gRPC call: who called
// which method on which domains, how many items, how many failed and why,
// the outcome and the latency.
//
// A record never holds a point, a transitInfo, an item id, an identifier, a
// key or an error message: only counts, fixed names (methods, codes,
// ErrorReason names), the principal and the names of domains that exist.
// Handlers fill the [Record] found in their context; the interceptors create
// it and write it when the call ends.
package audit

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
)

// maxDomains bounds the domains one record lists (a long stream may name
// many).
const maxDomains = 16

// Record is what a handler reports about its call. Its methods are safe for
// concurrent use and do nothing on a nil *Record, so that handlers can call
// them whether or not an interceptor created one.
type Record struct {
	mu         sync.Mutex
	principal  string
	domains    []string
	items      int
	itemErrors map[string]int // by ErrorReason name
}

type recordKey struct{}

// NewContext returns a context that carries r.
func NewContext(ctx context.Context, r *Record) context.Context {
	return context.WithValue(ctx, recordKey{}, r)
}

// FromContext returns the Record of the call, or nil.
func FromContext(ctx context.Context) *Record {
	r, _ := ctx.Value(recordKey{}).(*Record)
	return r
}

// SetPrincipal records the authenticated caller.
func (r *Record) SetPrincipal(p string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.principal = p
	r.mu.Unlock()
}

// AddDomain records a domain the call used. Pass only names of domains
// that exist: a name the caller made up could hold anything.
func (r *Record) AddDomain(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.domains, name) && len(r.domains) < maxDomains {
		r.domains = append(r.domains, name)
	}
}

// AddItems records n more items evaluated.
func (r *Record) AddItems(n int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.items += n
	r.mu.Unlock()
}

// AddItemError records one failed item, by its ErrorReason name.
func (r *Record) AddItemError(reason string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.itemErrors == nil {
		r.itemErrors = map[string]int{}
	}
	r.itemErrors[reason]++
}

// Snapshot returns what the handler recorded so far, as a Summary whose
// Method, Code, Reason and Duration are left zero: the Logger fills them
// in when the call ends, and tracing (internal/grpcserver) reads the rest
// to annotate the call's span. It is the zero Summary on a nil *Record.
func (r *Record) Snapshot() Summary {
	if r == nil {
		return Summary{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return Summary{
		Principal:  r.principal,
		Domains:    append([]string{}, r.domains...),
		Items:      r.items,
		ItemErrors: maps.Clone(r.itemErrors),
	}
}

// Summary is a finished call, as given to the [Logger]'s observers.
type Summary struct {
	// Method is the full gRPC method name, e.g.
	// "/pseudonymizer.v1.Pseudonymizer/Identify".
	Method string
	// Principal is the authenticated caller ("" when authentication failed
	// or was not required).
	Principal string
	// Domains are the domains the call used (existing ones only).
	Domains []string
	// Items is the number of items evaluated; ItemErrors maps the
	// ErrorReason name of each failed item to its count.
	Items      int
	ItemErrors map[string]int
	// Code and Reason are the call's outcome (Reason is the ErrorInfo
	// reason of a failed call, or "").
	Code     codes.Code
	Reason   string
	Duration time.Duration
}

// Operation returns the method name without its service, e.g. "Identify".
func (s *Summary) Operation() string {
	return s.Method[strings.LastIndexByte(s.Method, '/')+1:]
}

// FailedItems is the total of ItemErrors.
func (s *Summary) FailedItems() int {
	n := 0
	for _, c := range s.ItemErrors {
		n += c
	}
	return n
}

// Logger writes the audit records and passes each summary to its
// observers.
type Logger struct {
	log       *slog.Logger
	observers []func(*Summary)
	now       func() time.Time
	sync      func() error
}

// NewLogger returns a Logger writing to log. Each observer is called once
// per finished call, after the record is written (metrics use it).
func NewLogger(log *slog.Logger, observers ...func(*Summary)) *Logger {
	return &Logger{log: log, observers: observers, now: time.Now}
}

// SyncWith makes each call wait, after its record is handed to the log,
// until sync returns: with a [GroupWriter]'s Sync under the log's handler,
// a call is answered only once its record is written, and the records of
// concurrent calls are written together. It returns l.
func (l *Logger) SyncWith(sync func() error) *Logger {
	l.sync = sync
	return l
}

// UnaryServerInterceptor creates the call's Record, runs the call and
// writes the record.
func (l *Logger) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := l.now()
		r := &Record{}
		resp, err := handler(NewContext(ctx, r), req)
		l.finish(ctx, info.FullMethod, r, start, err)
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams: one
// record per stream, with the totals of all its messages.
func (l *Logger) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := l.now()
		r := &Record{}
		err := handler(srv, &stream{ServerStream: ss, ctx: NewContext(ss.Context(), r)})
		l.finish(ss.Context(), info.FullMethod, r, start, err)
		return err
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the stream's context, which carries the Record.
func (s *stream) Context() context.Context { return s.ctx }

func (l *Logger) finish(ctx context.Context, method string, r *Record, start time.Time, err error) {
	st := status.Convert(err)
	sum := r.Snapshot()
	s := &sum
	s.Method, s.Code, s.Reason, s.Duration = method, st.Code(), rpcstatus.ReasonOf(st), l.now().Sub(start)

	level := slog.LevelInfo
	switch s.Code {
	case codes.OK, codes.Canceled:
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		level = slog.LevelError
	default:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("principal", s.Principal),
		slog.String("method", s.Method),
		slog.String("operation", s.Operation()),
		// A plain string and an integer: slog's JSON handler sends slices
		// and floats through encoding/json, which cost 15% of a unary call.
		slog.String("domains", strings.Join(s.Domains, ",")),
		slog.Int("items", s.Items),
		slog.Int("item_errors", s.FailedItems()),
		slog.String("code", s.Code.String()),
		slog.Int64("latency_us", s.Duration.Microseconds()),
	}
	if s.Reason != "" {
		attrs = append(attrs, slog.String("reason", s.Reason))
	}
	if len(s.ItemErrors) > 0 {
		byReason := make([]any, 0, len(s.ItemErrors))
		for _, k := range slices.Sorted(maps.Keys(s.ItemErrors)) {
			byReason = append(byReason, slog.Int(k, s.ItemErrors[k]))
		}
		attrs = append(attrs, slog.Group("item_error_reasons", byReason...))
	}
	// Through the handler, not Logger.LogAttrs: the record needs no source
	// position, and capturing one (runtime.Callers) costs a stack walk per
	// call.
	if h := l.log.Handler(); h.Enabled(ctx, level) {
		rec := slog.NewRecord(time.Now(), level, "grpc call", 0)
		rec.AddAttrs(attrs...)
		_ = h.Handle(ctx, rec)
		if l.sync != nil {
			// A failed write is the log's problem, as with a direct write:
			// the call's answer does not change.
			_ = l.sync()
		}
	}
	for _, o := range l.observers {
		o(s)
	}
}

// Refused writes the record of a call refused before it reached the
// interceptors: by the REST/JSON gateway, which authenticates before it
// reads the body, and rejects bodies that are not JSON requests of the
// method. principal is "" when authentication failed. No domain, no item:
// only the method, the principal and the status.
func (l *Logger) Refused(ctx context.Context, method, principal string, err error) {
	l.finish(ctx, method, &Record{principal: principal}, l.now(), err)
}

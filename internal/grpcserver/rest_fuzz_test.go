package grpcserver_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
)

// restFuzzFixture is a real server with its REST/JSON gateway (every
// layer: origin check, CORS, routing, authentication before the body,
// decoding, the in-process gRPC server with the whole interceptor chain),
// whose handler the fuzz target calls directly.
type restFuzzFixture struct {
	h       http.Handler
	blinded string // base64 of a valid blinded point
	ti      string // a valid transitInfo of fuzz_v1
}

func newRESTFuzzFixture(f *testing.F) *restFuzzFixture {
	f.Helper()
	cache, log := fuzzKeys(f)
	srv, err := grpcserver.New(grpcserver.Config{
		Keys: cache, Auth: auth.New(auth.Config{Dev: true}), MaxBatch: 64, Rate: 1e9, Burst: 1e9, Logger: log,
		REST: &grpcserver.RESTConfig{AllowedOrigins: []string{"https://app.example"}, MaxBodyBytes: 64 << 10},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	b, u, err := client.Blind([]byte("85073003328"))
	if err != nil {
		f.Fatal(err)
	}
	fx := &restFuzzFixture{h: srv.RESTHandler(), blinded: base64.StdEncoding.EncodeToString(b)}
	rec := fx.do(http.MethodPost, "/pseudo/v1/domains/fuzz_v1/pseudonymize", "application/json", 1, "", `{"items":[{"id":"s","blinded":"`+fx.blinded+`"}]}`)
	var st struct {
		Results []struct {
			Evaluated struct {
				Point       []byte `json:"point"`
				TransitInfo string `json:"transitInfo"`
			} `json:"evaluated"`
		} `json:"results"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || len(st.Results) != 1 {
		f.Fatalf("seed pseudonymize: %d %s", rec.Code, rec.Body)
	}
	tp, err := u.Unblind(st.Results[0].Evaluated.Point, st.Results[0].Evaluated.TransitInfo)
	if err != nil {
		f.Fatal(err)
	}
	bt, _, err := client.BlindTransit(tp)
	if err != nil {
		f.Fatal(err)
	}
	fx.blinded, fx.ti = base64.StdEncoding.EncodeToString(bt), tp.Info
	return fx
}

// do sends one request to the handler from a loopback peer. who: 0 no
// credentials, 1 the fuzz caller, 2 a stranger; origin "" sends none.
func (fx *restFuzzFixture) do(method, path, contentType string, who uint8, origin, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://127.0.0.1"+path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:40000"
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	switch who % 3 {
	case 1:
		req.Header.Set(auth.DevPrincipalHeader, fuzzCaller)
	case 2:
		req.Header.Set(auth.DevPrincipalHeader, "stranger")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	rec := httptest.NewRecorder()
	fx.h.ServeHTTP(rec, req)
	return rec
}

var (
	restFuzzMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch, "BREW"}
	restFuzzTypes   = []string{"application/json", "", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8", "multipart/form-data; boundary=x"}
	// digits8 finds identifier-like runs in a request.
	digits8 = regexp.MustCompile(`[0-9]{8,}`)
)

// FuzzREST sends arbitrary requests (method, path, content type, caller,
// origin, body) through the whole REST/JSON gateway and checks that every
// answer is a typed one: JSON; a google.rpc.Status whose code matches the
// HTTP status for every refusal, never INTERNAL or UNKNOWN (no 500); and a
// refusal never quotes what the request carried.
func FuzzREST(f *testing.F) {
	fx := newRESTFuzzFixture(f)
	for _, s := range []struct {
		m, path, body string
		ct, who       uint8
	}{
		{"POST", "/pseudo/v1/domains/fuzz_v1/pseudonymize", `{"items":[{"id":"1","blinded":"` + fx.blinded + `"}]}`, 0, 1},
		{"POST", "/pseudo/v1/domains/fuzz_v1/identify", `{"items":[{"id":"1","blinded":"` + fx.blinded + `","transitInfo":"` + fx.ti + `"}]}`, 0, 1},
		{"POST", "/pseudo/v1/domains/fuzz_v1/convertTo/fuzz_v2", `{"items":[{"id":"1","blinded":"` + fx.blinded + `","transitInfo":"` + fx.ti + `"}]}`, 0, 1},
		{"GET", "/pseudo/v1/domains/fuzz_v1", "", 0, 1},
		{"GET", "/pseudo/v1/openapi.json", "", 0, 0},
		{"POST", "/pseudo/v1/domains/fuzz_v1/pseudonymize", `{"items":[{"id":"85073003328","blinded":"85073003328"}]}`, 0, 1},
		{"POST", "/pseudo/v1/domains/%2e%2e/identify", `{"items":[]}`, 0, 1},
		{"POST", "/pseudo/v1/domains/fuzz_v1/pseudonymize", `{"items":[` + strings.Repeat(`{},`, 70) + `{}]}`, 0, 1},
		{"POST", "/pseudo/v1/domains/fuzz_v1/pseudonymize", "items=85073003328", 3, 1},
		{"POST", "/pseudo/v1/domains/fuzz_v1/pseudonymize", `{"items":[]}`, 0, 0},
	} {
		method := uint8(0)
		if s.m == "POST" {
			method = 1
		}
		f.Add(method, s.path, s.ct, s.who, false, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method uint8, path string, ct, who uint8, crossOrigin bool, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#?") || len(path) > 2048 {
			return // not a request line httptest.NewRequest accepts
		}
		origin := ""
		if crossOrigin {
			origin = "https://evil.example"
		}
		var rec *httptest.ResponseRecorder
		func() {
			defer func() {
				if p := recover(); p != nil {
					rec = nil
				}
			}()
			rec = fx.do(restFuzzMethods[int(method)%len(restFuzzMethods)], path, restFuzzTypes[int(ct)%len(restFuzzTypes)], who, origin, string(body))
		}()
		if rec == nil {
			return // httptest.NewRequest refused the target
		}
		if rec.Code >= 500 && rec.Code != http.StatusNotImplemented && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
		}
		if rec.Code == http.StatusNoContent || rec.Code == http.StatusOK && method%uint8(len(restFuzzMethods)) == 4 {
			return // a CORS preflight
		}
		if ctype := rec.Header().Get("Content-Type"); !strings.HasPrefix(ctype, "application/json") {
			t.Fatalf("HTTP %d with Content-Type %q: %s", rec.Code, ctype, rec.Body)
		}
		if rec.Code == http.StatusOK {
			return
		}
		var sp spb.Status
		if err := protojson.Unmarshal(rec.Body.Bytes(), &sp); err != nil {
			t.Fatalf("HTTP %d, body not a google.rpc.Status (%v): %s", rec.Code, err, rec.Body)
		}
		if rpcstatus.ReasonOf(status.FromProto(&sp)) == "" {
			t.Fatalf("HTTP %d without an ErrorInfo: %s", rec.Code, rec.Body)
		}
		if rec.Code != 413 && rec.Code != 415 && rec.Code != 405 && rec.Code != grpcHTTP(codes.Code(sp.GetCode())) {
			t.Fatalf("HTTP %d for code %d: %s", rec.Code, sp.GetCode(), rec.Body)
		}
		for _, run := range digits8.FindAll(append(body, path...), -1) {
			if bytes.Contains(rec.Body.Bytes(), run) {
				t.Fatalf("the refusal quotes %q of the request: %s", run, rec.Body)
			}
		}
	})
}

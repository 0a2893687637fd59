package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// restRe finds the REST/JSON listener's address in the "serving" record.
var restRe = regexp.MustCompile(`"msg":"pseudonymizer: serving",.*"rest":"([^"]+)"`)

// TestREADMECurl runs the README's curl walkthrough, exactly as written
// (the block after the "e2e: TestREADMECurl" marker), against the built
// server in development mode with the REST/JSON gateway, and checks every
// "# => " line it promises, in order.
func TestREADMECurl(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's curl walkthrough needs %s: %v", tool, err)
		}
	}
	root, err := vaulttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- e2e: TestREADMECurl[^\n]*-->\n```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no block after the TestREADMECurl marker")
	}
	block := string(m[1])
	var want []string
	for l := range strings.SplitSeq(block, "\n") {
		if s, ok := strings.CutPrefix(l, "# => "); ok {
			want = append(want, s)
		}
	}
	if len(want) < 4 {
		t.Fatalf("the block promises %d outputs", len(want))
	}

	srv := startServer(t, "pseudonymizer-rest-dev", cleanEnv(), "-dev", "-data-dir", t.TempDir(), "-rest-listen", "127.0.0.1:0")
	rest := srv.waitLog(t, restRe, 10*time.Second)[1]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", block)
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv("REST=http://" + rest + "/pseudo/v1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the README block failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the README block printed\n%s\nwhere it promises\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// testREST runs over the REST/JSON gateway of the built server (mTLS,
// keys in Vault) what prescriber software in another language does: a
// pharmacist pseudonymizes a NISS (blinded by the Go client SDK, sent as
// JSON), the prescription service opens it to the same pseudonym at rest
// as over gRPC, the pharmacist identifies it back; the prescription
// service, an owner, is refused identify over REST as over gRPC.
func testREST(t *testing.T, w *world, pk *pki, rest string) {
	hc := func(principal string) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{pk.clients[principal]}, RootCAs: pk.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13,
		}}}
	}
	post := func(principal, path string, req, resp proto.Message) int {
		t.Helper()
		b, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		r, err := hc(principal).Post("https://"+rest+"/pseudo/v1/domains/"+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode == http.StatusOK {
			if err := protojson.Unmarshal(body, resp); err != nil {
				t.Fatalf("%s: %v: %s", path, err, body)
			}
		}
		return r.StatusCode
	}

	p := w.newPatient()
	id, err := identifier.NISS(p.plain())
	if err != nil {
		t.Fatal(err)
	}
	blinded, u, err := client.Blind(id)
	if err != nil {
		t.Fatal(err)
	}
	var pr pb.PseudonymizeResponse
	if code := post(pharmacist, rxDomain+"/pseudonymize", &pb.PseudonymizeRequest{Items: []*pb.PseudonymizeItem{{Id: "1", Blinded: blinded}}}, &pr); code != 200 {
		t.Fatalf("pseudonymize over REST: HTTP %d", code)
	}
	ev := pr.GetResults()[0].GetEvaluated()
	tr, err := u.Unblind(ev.GetPoint(), ev.GetTransitInfo())
	if err != nil {
		t.Fatal(err)
	}
	w.sec.transit(tr)
	viaREST, err := w.rx.AtRest(context.Background(), sendText(t, tr))
	if err != nil {
		t.Fatal(err)
	}
	viaGRPC, err := w.rx.AtRest(context.Background(), sendText(t, w.pseudonymize(t, pharmacist, rxDomain, p.formatted())))
	if err != nil {
		t.Fatal(err)
	}
	if viaREST != viaGRPC {
		t.Fatal("the pseudonym at rest differs between REST and gRPC")
	}

	// Identify back over REST.
	b, iu, err := client.BlindTransit(tr)
	if err != nil {
		t.Fatal(err)
	}
	var ir pb.IdentifyResponse
	item := &pb.IdentifyItem{Id: "1", Blinded: b, TransitInfo: tr.Info}
	if code := post(pharmacist, rxDomain+"/identify", &pb.IdentifyRequest{Items: []*pb.IdentifyItem{item}}, &ir); code != 200 {
		t.Fatalf("identify over REST: HTTP %d", code)
	}
	got, err := iu.Identify(ir.GetResults()[0].GetPoint())
	if err != nil || !bytes.Equal(got, id) {
		t.Fatalf("identify over REST gave another identifier (%v)", err)
	}
	// The owner may not identify, over REST either.
	if code := post(rxService, rxDomain+"/identify", &pb.IdentifyRequest{Items: []*pb.IdentifyItem{item}}, &ir); code != http.StatusForbidden {
		t.Fatalf("the owner's identify over REST: HTTP %d, want 403", code)
	}
}

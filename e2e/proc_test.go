package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

func tail(b []byte, n int) string {
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}

// proc is a child process in its own process group.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	exited chan struct{}
}

// startProc starts bin and stops it (SIGTERM, then SIGKILL to its whole
// process group) when the test ends. On failure, its output is logged.
func startProc(t testing.TB, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &proc{name: name, cmd: cmd, stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, tail(p.stdout.Bytes(), 4000), name, tail(p.stderr.Bytes(), 8000))
		}
	})
	return p
}

// stop ends the process gracefully, or kills its group after 10 s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// output is everything the process wrote.
func (p *proc) output() []byte {
	return append(p.stdout.Bytes(), p.stderr.Bytes()...)
}

// waitLog waits until the process's stderr (its log) matches re and
// returns the submatches.
func (p *proc) waitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	return p.wait(t, p.stderr, "log", re, timeout)
}

// wait waits until out (named what) matches re and returns the
// submatches; it fails the test if the process exits first.
func (p *proc) wait(t testing.TB, out interface{ Bytes() []byte }, what string, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	var m []string
	waitfor.State(t, timeout, fmt.Sprintf("%s to print %q on its %s", p.name, re, what), func() (bool, string) {
		if m = re.FindStringSubmatch(string(out.Bytes())); m != nil {
			return true, ""
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before printing %q:\nstdout:\n%s\nstderr:\n%s",
				p.name, p.cmd.ProcessState, re, tail(p.stdout.Bytes(), 4000), tail(p.stderr.Bytes(), 8000))
		default:
		}
		return false, "stderr:\n" + string(tail(p.stderr.Bytes(), 8000))
	})
	return m
}

// server is a running pseudonymizer process.
type server struct {
	*proc
	addr        string // gRPC host:port
	metricsAddr string // host:port of /metrics
}

// The server's addresses, from its structured "serving" log record on
// stderr (JSON, the default format): outside development mode it prints
// nothing on stdout.
var (
	servingRe = regexp.MustCompile(`"msg":"pseudonymizer: serving","grpc":"([^"]+)"`)
	metricsRe = regexp.MustCompile(`"msg":"pseudonymizer: serving",.*"metrics":"([^"]+)"`)
)

// startServer runs the pseudonymizer binary with args (plus a free
// loopback port for gRPC and metrics) and waits until it serves.
func startServer(t testing.TB, name string, env []string, args ...string) *server {
	t.Helper()
	args = append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0"}, args...)
	p := startProc(t, name, serverBin, env, args...)
	s := &server{proc: p}
	s.addr = p.waitLog(t, servingRe, 60*time.Second)[1]
	s.metricsAddr = p.waitLog(t, metricsRe, 10*time.Second)[1]
	return s
}

// metrics returns the server's /metrics page.
func (s *server) metrics(t testing.TB) []byte {
	t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", s.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET /metrics: %s, %v", s.name, resp.Status, err)
	}
	return b
}

// handled sums the server's grpc_server_handled_total for one method and
// code.
func (s *server) handled(t testing.TB, method, code string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(s.metrics(t)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_handled_total{") ||
			!strings.Contains(line, `grpc_method="`+method+`"`) || !strings.Contains(line, `grpc_code="`+code+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: metrics line %q: %v", s.name, line, err)
		}
		sum += v
	}
	return sum
}

// Health service names: "" is the server as a whole (NOT_SERVING while the
// key store cannot be read), serviceHealth the pseudonymizer service, which
// readiness probes check (SERVING as long as the server runs).
const serviceHealth = "pseudonymizer.v1.Pseudonymizer"

// health asks the gRPC health service for the status of service.
func health(ctx context.Context, cc *grpc.ClientConn, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return r.GetStatus(), nil
}

// waitHealth waits until the overall health status is want.
func waitHealth(t testing.TB, cc *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("health %v", want), func() (bool, string) {
		st, err := health(context.Background(), cc, "")
		return err == nil && st == want, fmt.Sprintf("status %v, err %v", st, err)
	})
}

// waitFor polls cond until it holds, and fails the test after timeout with
// the last state cond described (internal/waitfor). Deadlines bound waiting
// only: nothing is asserted about how long it took.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	waitfor.State(t, timeout, what, cond)
}

// runCtl runs the pseudoctl binary and returns its stdout; it fails the
// test on a non-zero exit status. env holds VAULT_ADDR and VAULT_TOKEN (a
// token in an argument would be visible in ps).
func runCtl(t testing.TB, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctlBin, args...)
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pseudoctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// writeFile writes a file of mode 0600.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

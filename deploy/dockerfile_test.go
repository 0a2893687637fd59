package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
}

func readDockerfile(t *testing.T, path string) (ins []instruction, comments string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var cur string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			comments += line + "\n"
			continue
		}
		if line == "" && cur == "" {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur += l + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		ins = append(ins, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ins, comments
}

// TestDockerfile: images cannot be built here (no registry), so the
// Dockerfile is checked as text: a multi-stage build of the three binaries
// with CGO_ENABLED=0 on the go.mod toolchain, a static non-root final
// stage, pseudonymizer as the entrypoint, and the image the Deployment
// runs.
func TestDockerfile(t *testing.T) {
	ins, comments := readDockerfile(t, filepath.Join("..", "Dockerfile"))
	var stages [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s before the first FROM", in.cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a multi-stage build", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The build stage: the toolchain of go.mod, static binaries of the
	// three commands.
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	from := strings.Fields(build[0].args)
	if goVersion == nil || !strings.HasPrefix(from[0], "golang:"+string(goVersion[1])) || len(from) < 3 || !strings.EqualFold(from[1], "AS") {
		t.Errorf("build stage FROM %q; want golang:%s AS <name>", build[0].args, goVersion[1])
	}
	stageName := from[len(from)-1]
	built := false
	for _, in := range build {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		built = true
		if !strings.Contains(in.args, "CGO_ENABLED=0") {
			t.Errorf("go build without CGO_ENABLED=0: %q", in.args)
		}
		for _, cmd := range []string{"pseudonymizer", "pseudo", "pseudoctl"} {
			if !slices.Contains(strings.Fields(in.args), "./cmd/"+cmd) {
				t.Errorf("go build does not build ./cmd/%s", cmd)
			}
			if _, err := os.Stat(filepath.Join("..", "cmd", cmd)); err != nil {
				t.Error(err)
			}
		}
		for _, v := range []string{"internal/buildinfo.version=", "internal/buildinfo.revision="} {
			if !strings.Contains(in.args, v) {
				t.Errorf("go build does not set %s (the context has no .git)", v)
			}
		}
	}
	if !built {
		t.Error("no go build in the build stage")
	}

	// The final stage: a static base, non-root, the three binaries.
	base := strings.Fields(final[0].args)[0]
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("final base %q; want distroless/static or scratch", base)
	}
	var user, entrypoint string
	var copied []string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "COPY":
			f := strings.Fields(in.args)
			if f[0] != "--from="+stageName {
				continue
			}
			for _, src := range f[1 : len(f)-1] {
				copied = append(copied, filepath.Base(src))
			}
		case "RUN":
			t.Errorf("RUN in the final stage: it has no shell (%q)", in.args)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" || !regexp.MustCompile(`^[0-9]+$`).MatchString(uid) {
		t.Errorf("USER %q; want a numeric non-root user (Kubernetes runAsNonRoot checks the number)", user)
	}
	for _, cmd := range []string{"pseudonymizer", "pseudo", "pseudoctl"} {
		if !slices.Contains(copied, cmd) {
			t.Errorf("%s is not copied into the final image (copied: %v)", cmd, copied)
		}
	}
	if !strings.Contains(entrypoint, `pseudonymizer"]`) {
		t.Errorf("ENTRYPOINT %s; want the pseudonymizer binary (exec form)", entrypoint)
	}

	// The Deployment runs the image the Dockerfile documents, as its user.
	m := regexp.MustCompile(`-t (\S+):\S+`).FindStringSubmatch(comments)
	if m == nil {
		t.Fatal("the Dockerfile does not document its image name (docker build -t <name>:<tag>)")
	}
	var d deployment
	find(t, manifests(t), "Deployment", "pseudonymizer").decode(t, &d)
	c := d.Spec.Template.Spec.Containers[0]
	repo, _, _ := strings.Cut(c.Image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	if repo != m[1] {
		t.Errorf("the Deployment runs %q; the Dockerfile builds %q", c.Image, m[1])
	}
	if len(c.Command) > 0 {
		t.Errorf("the Deployment overrides the entrypoint: %v", c.Command)
	}
	if u := d.Spec.Template.Spec.SecurityContext.RunAsUser; u == nil || *u != mustAtoi(t, uid) {
		t.Errorf("the pod's runAsUser %s is not the image's USER %s", show(u), uid)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	i, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

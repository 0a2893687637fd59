package buildinfo

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want Info
	}{
		{"no build info", nil, false, Info{Version: Devel, Revision: Unknown}},
		{"test binary", &debug.BuildInfo{GoVersion: "go1.26.0"}, true, Info{Version: Devel, Revision: Unknown, GoVersion: "go1.26.0"}},
		{"work tree", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"},
		}}, true, Info{Version: Devel, Revision: "0123abcd", Modified: true, GoVersion: "go1.26.0"}},
		{"go install @v1.2.3", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}}, true,
			Info{Version: "v1.2.3", Revision: Unknown, GoVersion: "go1.26.0"}},
	} {
		got := fromBuildInfo(tc.bi, tc.ok)
		if tc.want.GoVersion == "" {
			tc.want.GoVersion = got.GoVersion
		}
		if got != tc.want || got.GoVersion == "" {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestLinkerOverrides(t *testing.T) {
	version, revision = "v9.9.9", "feedface"
	defer func() { version, revision = "", "" }()
	if in := fromBuildInfo(nil, false); in.Version != "v9.9.9" || in.Revision != "feedface" {
		t.Fatalf("%+v", in)
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	Print(&b, "prog")
	out := b.String()
	if !strings.HasPrefix(out, "prog ") || !strings.Contains(out, "(revision ") || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("%q", out)
	}
}

func TestRequested(t *testing.T) {
	for args, want := range map[string]bool{
		"-version":                 true,
		"--version":                true,
		"-insecure -version":       true,
		"domain list -version":     true,
		"-version=true":            true,
		"":                         false,
		"-dev":                     false,
		"pseudonymize -- -version": false,
		"-versions":                false,
	} {
		if got := Requested(strings.Fields(args)); got != want {
			t.Errorf("Requested(%q) = %v", args, got)
		}
	}
}

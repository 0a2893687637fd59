// Package buildinfo says which build of the project a binary is: the main
// module's version and the VCS revision it was built from, read from the
// build information the Go toolchain embeds (runtime/debug.ReadBuildInfo).
// Every binary prints it for -version, and the server exports it as the
// pseudonymizer_build_info metric.
//
// A build without VCS information (a container build whose context has no
// .git directory) can set the revision with the linker:
//
//	go build -ldflags "-X github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo.revision=$REV" ./cmd/...
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Unknown is the revision of a build without VCS information, and Devel the
// version of a main module built from a work tree (what the toolchain
// reports, "(devel)", or nothing at all in a test binary).
const (
	Unknown = "unknown"
	Devel   = "(devel)"
)

// Set by the linker (-X) when the build has no VCS information.
var version, revision string

// Info is the build of the running binary.
type Info struct {
	// Version is the main module's version ("v1.2.3", a pseudo-version)
	// or Devel.
	Version string
	// Revision is the VCS revision (a commit hash) or Unknown.
	Revision string
	// Modified is set when the work tree had uncommitted changes.
	Modified bool
	// GoVersion is the toolchain that built the binary ("go1.26.0").
	GoVersion string
}

// Read returns the build information of the running binary.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(bi, ok)
}

func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	in := Info{Version: Devel, Revision: Unknown, GoVersion: runtime.Version()}
	if ok && bi != nil {
		if bi.Main.Version != "" {
			in.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					in.Revision = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		in.Version = version
	}
	if revision != "" {
		in.Revision = revision
	}
	return in
}

// String is the line -version prints after the program's name:
// "v1.2.3 (revision 0123abcd…, modified) go1.26.0".
func (in Info) String() string {
	rev := in.Revision
	if in.Modified {
		rev += ", modified"
	}
	return fmt.Sprintf("%s (revision %s) %s", in.Version, rev, in.GoVersion)
}

// Print writes "<program> <Info>" and a newline to w: what -version prints.
func Print(w io.Writer, program string) {
	fmt.Fprintf(w, "%s %s\n", program, Read())
}

// Requested reports whether args ask for the version: -version or
// --version (also =true) before the first "--". Programs whose flags are
// parsed in several steps (flags before and after a command) check it
// first, so that -version works wherever it is given, with nothing else
// checked.
func Requested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-version", "--version", "-version=true", "--version=true":
			return true
		}
	}
	return false
}

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// -version prints the build and exits 0, with no store and no command.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"domain", "list", "-version"}} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut, func(string) string { return "" })
		if code != 0 || !strings.HasPrefix(out.String(), "pseudoctl ") || !strings.Contains(out.String(), "(revision ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
}

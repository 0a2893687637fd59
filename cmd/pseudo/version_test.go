package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// -version prints the build and succeeds, before or after a command,
// without connecting anywhere.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"-addr", "127.0.0.1:1", "-version"}, {"pseudonymize", "-version"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
		if err != nil || !strings.HasPrefix(out.String(), "pseudo ") || !strings.Contains(out.String(), "(revision ") {
			t.Errorf("%q: %v, stdout %q, stderr %q", args, err, out.String(), errOut.String())
		}
		if code := exitCode(err, &errOut); code != 0 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
}

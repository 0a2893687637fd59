package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// -version prints the build and succeeds without measuring anything.
func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-version"}, &out, &errOut)
	if err != nil || !strings.HasPrefix(out.String(), "pseudobench ") || !strings.Contains(out.String(), "(revision ") {
		t.Fatalf("%v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
}

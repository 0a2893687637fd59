package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// -version prints the build and returns nil (exit 0) before anything is
// checked: no TLS, no key store, not even a valid environment or config
// file.
func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-version"}, env(map[string]string{
		"PSEUDONYMIZER_MAX_BATCH": "many",
		"PSEUDONYMIZER_CONFIG":    "/nonexistent.json",
	}), &out, &errOut)
	if err != nil || !strings.HasPrefix(out.String(), "pseudonymizer ") || !strings.Contains(out.String(), "(revision ") {
		t.Fatalf("%v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
	// Not from the environment: PSEUDONYMIZER_VERSION does not turn a
	// server into a version printer.
	c, err := parseConfig([]string{"-dev"}, env(map[string]string{"PSEUDONYMIZER_VERSION": "true"}), &errOut)
	if err != nil || c.version {
		t.Fatalf("PSEUDONYMIZER_VERSION: %+v, %v", c, err)
	}
}

package keys

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSecretRefusesText: a Secret never marshals as text, alone or inside
// a value, and the error does not quote it.
func TestSecretRefusesText(t *testing.T) {
	s := Secret("0123456789abcdef0123456789abcdef")
	if b, err := s.MarshalText(); err == nil || b != nil {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
	for _, v := range []any{s, map[string]Secret{"t1": s}, Transit{Active: "t1", Keys: map[string]Secret{"t1": s}}} {
		b, err := json.Marshal(v)
		if err == nil {
			t.Fatalf("json.Marshal(%T) = %s", v, b)
		}
		if strings.Contains(err.Error(), string(s)) {
			t.Fatalf("the error quotes the secret: %v", err)
		}
	}
}

package keys_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/keystest"
)

func TestFileStoreAdmin(t *testing.T) {
	ctx := context.Background()
	s, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	keystest.TestAdmin(t, s)

	// A corrupt file is reported without quoting it.
	d, err := s.Domain(ctx, keystest.Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	k := base64.StdEncoding.EncodeToString(d.Scalar)
	i := strings.Index(string(b), k)
	if i < 0 {
		t.Fatal("scalar not found in the file")
	}
	b[i+10] = '"' // break the JSON inside the scalar
	if err := os.WriteFile(s.Path(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Domain(ctx, keystest.Spec.Name)
	if !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("corrupt file: %v", err)
	}
	if strings.Contains(err.Error(), k[:10]) || strings.Contains(err.Error(), k[11:20]) {
		t.Fatalf("error quotes the file: %v", err)
	}
}

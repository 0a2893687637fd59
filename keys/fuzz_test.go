package keys

import (
	"bytes"
	"testing"
)

// FuzzDecodeFile checks that the file store decoder never panics, that what
// it accepts is valid, and that it re-encodes to a fixed point.
func FuzzDecodeFile(f *testing.F) {
	st := newFileState()
	d, err := GenerateDomain(DemoSpec, nil)
	if err != nil {
		f.Fatal(err)
	}
	st.domains[d.Name] = d
	k2, err := NewScalar(nil)
	if err != nil {
		f.Fatal(err)
	}
	st.ownerKeys["demo-owner"] = map[string]Secret{d.Name: k2}
	valid, err := encodeFile(st)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"version":1,"domains":{}}`))
	f.Add([]byte(`{"version":1,"domains":{"x":null}}`))
	f.Add([]byte(`{"version":2,"domains":{}}`))
	f.Add([]byte(`{"version":1,"domains":{}} {}`))
	f.Add(bytes.Replace(valid, []byte(`"ttl": "5m0s"`), []byte(`"ttl": "-1s"`), 1))
	f.Add(bytes.Replace(valid, []byte(`"active": "t1"`), []byte(`"active": "t2"`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeFile(b)
		if err != nil {
			return
		}
		for name, d := range st.domains {
			if d.Name != name || d.Validate() != nil || len(d.Scalar) != ScalarSize {
				t.Fatalf("accepted an invalid domain %q", name)
			}
		}
		e1, err := encodeFile(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := decodeFile(e1)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		e2, err := encodeFile(st2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e1, e2) {
			t.Fatalf("encoding is not a fixed point:\n%s\n%s", e1, e2)
		}
		for name, d := range st.domains {
			if st2.domains[name].Generation != d.Generation {
				t.Fatalf("generation of %q changed on re-encoding", name)
			}
		}
	})
}

package pseudonymizerv1

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestDescriptor fails when a regeneration drops or changes an RPC, so that the
// generated code cannot silently diverge from the API the server implements.
func TestDescriptor(t *testing.T) {
	fd := File_pseudonymizer_v1_pseudonymizer_proto
	if got, want := fd.Package(), protoreflect.FullName("pseudonymizer.v1"); got != want {
		t.Fatalf("package = %q, want %q", got, want)
	}
	if fd.Services().Len() != 1 {
		t.Fatalf("%d services, want 1", fd.Services().Len())
	}
	svc := fd.Services().ByName("Pseudonymizer")
	if svc == nil {
		t.Fatal("service Pseudonymizer missing")
	}

	type rpc struct {
		name, in, out      string
		clientSt, serverSt bool
	}
	want := []rpc{
		{"Pseudonymize", "PseudonymizeRequest", "PseudonymizeResponse", false, false},
		{"Identify", "IdentifyRequest", "IdentifyResponse", false, false},
		{"ConvertTo", "ConvertToRequest", "ConvertToResponse", false, false},
		{"PseudonymizeStream", "PseudonymizeStreamRequest", "PseudonymizeStreamResponse", true, true},
		{"IdentifyStream", "IdentifyStreamRequest", "IdentifyStreamResponse", true, true},
		{"ConvertToStream", "ConvertToStreamRequest", "ConvertToStreamResponse", true, true},
		{"GetDomain", "GetDomainRequest", "GetDomainResponse", false, false},
	}
	var got []rpc
	methods := svc.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		got = append(got, rpc{
			string(m.Name()), string(m.Input().Name()), string(m.Output().Name()),
			m.IsStreamingClient(), m.IsStreamingServer(),
		})
	}
	if !slices.Equal(got, want) {
		t.Errorf("methods:\n got %v\nwant %v", got, want)
	}

	// The grpc service descriptor must agree with the proto descriptor.
	if Pseudonymizer_ServiceDesc.ServiceName != string(svc.FullName()) {
		t.Errorf("ServiceDesc.ServiceName = %q, want %q", Pseudonymizer_ServiceDesc.ServiceName, svc.FullName())
	}
	if n := len(Pseudonymizer_ServiceDesc.Methods) + len(Pseudonymizer_ServiceDesc.Streams); n != len(want) {
		t.Errorf("ServiceDesc has %d methods and streams, want %d", n, len(want))
	}
}

// TestOutcomes checks that each batch result carries its output or a
// google.rpc.Status in the oneof `outcome`.
func TestOutcomes(t *testing.T) {
	msgs := File_pseudonymizer_v1_pseudonymizer_proto.Messages()
	for _, tc := range []struct {
		msg     string
		success string
	}{
		{"PseudonymizeResult", "evaluated"},
		{"IdentifyResult", "point"},
		{"ConvertResult", "evaluated"},
	} {
		md := msgs.ByName(protoreflect.Name(tc.msg))
		if md == nil {
			t.Errorf("message %s missing", tc.msg)
			continue
		}
		o := md.Oneofs().ByName("outcome")
		if o == nil || o.Fields().Len() != 2 {
			t.Errorf("%s: want oneof outcome with 2 fields", tc.msg)
			continue
		}
		if o.Fields().ByName(protoreflect.Name(tc.success)) == nil {
			t.Errorf("%s.outcome: no field %s", tc.msg, tc.success)
		}
		if e := o.Fields().ByName("error"); e == nil || e.Message() == nil || e.Message().FullName() != "google.rpc.Status" {
			t.Errorf("%s.outcome: error is not a google.rpc.Status", tc.msg)
		}
		if md.Fields().ByName("id") == nil {
			t.Errorf("%s: no id field", tc.msg)
		}
	}
}

// Compile-time checks of the generated Go names that other packages use.
var (
	_ PseudonymizerServer = UnimplementedPseudonymizerServer{}
	_                     = NewPseudonymizerClient
	_                     = RegisterPseudonymizerServer

	_ isPseudonymizeResult_Outcome = (*PseudonymizeResult_Evaluated)(nil)
	_ isPseudonymizeResult_Outcome = (*PseudonymizeResult_Error)(nil)
	_ isIdentifyResult_Outcome     = (*IdentifyResult_Point)(nil)
	_ isIdentifyResult_Outcome     = (*IdentifyResult_Error)(nil)
	_ isConvertResult_Outcome      = (*ConvertResult_Evaluated)(nil)
	_ isConvertResult_Outcome      = (*ConvertResult_Error)(nil)
)

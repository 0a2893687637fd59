// Package pseudonymizerv1 is the Go code of the pseudonymizer.v1 gRPC API,
// generated from pseudonymizer.proto by scripts/gen-proto.sh. The API
// reference is the doc comment of the service ([PseudonymizerServer],
// [PseudonymizerClient]) and of each message; the protocol behind it is
// docs/PROTOCOL.md.
//
// Per-item errors are [google.golang.org/genproto/googleapis/rpc/status.Status]
// values; convert them with [google.golang.org/grpc/status.FromProto].
package pseudonymizerv1

#!/usr/bin/env bash
# gen-proto.sh lints the gRPC API (proto/) and regenerates its Go code:
#
#	proto/pseudonymizer/v1/pseudonymizer.pb.go       (protoc-gen-go)
#	proto/pseudonymizer/v1/pseudonymizer_grpc.pb.go  (protoc-gen-go-grpc)
#	proto/pseudonymizer/v1/pseudonymizer.pb.gw.go    (protoc-gen-grpc-gateway)
#	proto/pseudonymizer/v1/pseudonymizer.swagger.json (protoc-gen-openapiv2)
#
# It needs only Go. buf, protoc-gen-go and protoc-gen-go-grpc are built with
# `go install` at the pinned versions below into .cache/bin/ of the checkout
# (git-ignored) and rebuilt only when missing or at another version. Nothing is
# fetched from the Buf Schema Registry: google/rpc/status.proto is vendored in
# proto/third_party/ and the other google/protobuf imports are buf's built-in
# well-known types. Running it twice gives the same files.
#
# Usage: scripts/gen-proto.sh            lint, then generate
#        scripts/gen-proto.sh --lint     lint only
set -euo pipefail

# Keep PROTOC_GEN_GO_VERSION equal to the google.golang.org/protobuf version in
# go.mod, and PROTOC_GEN_GO_GRPC_VERSION compatible with google.golang.org/grpc
# there (v1.6.x generates code for grpc >= 1.64). buf v1.74.0 and v1.75.0 do
# not build from the module proxy mirror available here (some of their pinned
# dependency versions are missing), v1.73.0 does.
BUF_VERSION="${BUF_VERSION:-v1.73.0}"
PROTOC_GEN_GO_VERSION="${PROTOC_GEN_GO_VERSION:-v1.36.12}"
PROTOC_GEN_GO_GRPC_VERSION="${PROTOC_GEN_GO_GRPC_VERSION:-v1.6.2}"
# Keep equal to github.com/grpc-ecosystem/grpc-gateway/v2 in go.mod (runtime).
GRPC_GATEWAY_VERSION="${GRPC_GATEWAY_VERSION:-v2.33.0}"

top="$(cd "$(dirname "$0")/.." && pwd)"
bin="$top/.cache/bin"
mkdir -p "$bin"

# tool NAME PACKAGE VERSION builds $bin/NAME from PACKAGE@VERSION unless the
# binary there already was built from that module version.
tool() {
	local name="$1" pkg="$2" version="$3" have=""
	if [ -x "$bin/$name" ]; then
		have="$(go version -m "$bin/$name" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')"
	fi
	if [ "$have" != "$version" ]; then
		echo "gen-proto: go install $pkg@$version" >&2
		# GOFLAGS is cleared so that flags meant for this module (e.g. -mod)
		# do not leak into the tool builds; GOWORK=off for the same reason.
		GOBIN="$bin" GOFLAGS= GOWORK=off go install "$pkg@$version"
	fi
}

tool buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
tool protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway "$GRPC_GATEWAY_VERSION"
tool protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 "$GRPC_GATEWAY_VERSION"

# buf.gen.yaml names the plugins as `local:` commands; the pinned ones come first.
export PATH="$bin:$PATH"
cd "$top"

buf lint
if [ "${1:-}" = "--lint" ]; then
	exit 0
fi
buf generate
echo "gen-proto: generated proto/pseudonymizer/v1/*.pb.go, *.pb.gw.go, *.swagger.json" >&2

#!/usr/bin/env bash
# vault-plugin.sh [dir] builds the pseudonymizer's Vault secrets-engine plugin
# (cmd/pseudonymizer-vault-plugin, package keyshare: the second share k₂ of
# split domain keys) into dir (default .cache/vault/plugins/, git-ignored),
# and prints the binary's path and its SHA-256, the two things Vault needs:
#
#	vault server -config=… (plugin_directory = "<dir>"), or -dev -dev-plugin-dir=<dir>
#	vault plugin register -sha256=<sha256> secret pseudonymizer-vault-plugin
#	vault secrets enable -path=pseudonymizer-shares pseudonymizer-vault-plugin
#
# Tests (internal/vaulttest.SharePlugin) and scripts/vault-dev.sh run it.
# The binary is replaced atomically, so concurrent runs are safe.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$top/.cache/vault/plugins}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
bin="$dir/pseudonymizer-vault-plugin"
tmp="$(mktemp "$dir/.build.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$top" && CGO_ENABLED=0 go build -trimpath -o "$tmp" ./cmd/pseudonymizer-vault-plugin)
chmod 0755 "$tmp"
mv "$tmp" "$bin"
echo "$bin"
sha256sum "$bin" | cut -d' ' -f1

#!/usr/bin/env bash
# vault-dev.sh [dir] starts a production-like set-up in one command: the
# Vault the project builds (scripts/vault-bin.sh), as a dev server on
# 127.0.0.1, with the KV v2 mount, the key-share plugin of split domain keys
# (scripts/vault-plugin.sh; copied into dir/plugins, registered with its
# SHA-256 and mounted at pseudonymizer-shares/), a file audit device, the
# policies, AppRoles for the service and for the owner recip-e, two demo
# domains made by pseudoctl (prescriptions_v1 with a whole key, therlink_v1
# split), and a CA with server and client certificates, all written into
# dir (default ./vault-dev). It prints the pseudonymizer and pseudo command
# lines to run against it, and keeps Vault running until Ctrl-C.
#
# Run `go install ./cmd/...` first: pseudoctl, pseudonymizer and pseudo
# must be on PATH (or give -pseudoctl /path/to/pseudoctl before dir).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
vault_bin="${VAULT_BIN:-$("$top/scripts/vault-bin.sh")}"
plugin_out="$("$top/scripts/vault-plugin.sh")"   # the binary's path, then its SHA-256
plugin="${plugin_out%%$'\n'*}"
helper="$(mktemp -d "${TMPDIR:-/tmp}/vault-dev.XXXXXX")"
trap 'rm -rf "$helper"' EXIT
(cd "$top" && go build -o "$helper/vaultdev" ./scripts/vaultdev)
"$helper/vaultdev" -vault "$vault_bin" -plugin "$plugin" "$@"

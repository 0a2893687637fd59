// Command pseudonymizer runs the blind pseudonymization gRPC service
// (pseudonymizer.v1). See the usage text below, or run it with -h.
//
// Development:
//
//	go run ./cmd/pseudonymizer -dev
//
// serves plaintext on 127.0.0.1:50051 with a demo domain in a local key
// file. Production uses TLS (mTLS and/or JWT bearer tokens) and Vault.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `Usage:
    pseudonymizer -dev [flags]
    pseudonymizer -tls-cert <file> -tls-key <file> [-tls-client-ca <file>]
                  [-jwt-jwks <file> | -jwt-key <file>] [-jwt-issuer <iss> -jwt-audience <aud>]
                  -vault-addr <url> [vault flags] [flags]

Every flag can also be set with an environment variable PSEUDONYMIZER_<FLAG>
(upper case, '-' as '_', e.g. PSEUDONYMIZER_MAX_BATCH=500) or in a JSON
config file (-config, or PSEUDONYMIZER_CONFIG) whose keys are the flag names
(e.g. {"listen": ":50051", "max-batch": 500, "dev": false}). Precedence:
flags, then environment, then the config file, then the defaults.

Callers are identified by their client certificate (first URI SAN, else the
subject CN) when -tls-client-ca is given, and/or by a JWT bearer token
(principal = sub) when -jwt-jwks or -jwt-key is given. Without TLS the
server only runs in development mode (-dev) on a loopback address, where the
caller is named by the metadata x-pseudonymizer-principal (default "dev").

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(os.Stderr, "pseudonymizer: %v (see -h)\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "pseudonymizer: %v\n", err)
		os.Exit(1)
	}
}

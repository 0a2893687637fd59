// Command pseudo pseudonymizes, identifies and converts values against a
// running pseudonymization service, from the command line or a file.
//
//	pseudo [flags] pseudonymize -domain D [-kind niss|raw] [value ...]
//	pseudo [flags] identify     -domain D [transit-pseudonym ...]
//	pseudo [flags] convert      -from A -to B [transit-pseudonym ...]
//	pseudo [flags] domain       NAME
//
// Values come from the arguments or, without arguments, from -in (a file,
// "-" for standard input), one per line. Results go to standard output, one
// line per input line, in order; a refused item prints "ERROR <reason>" on
// its line, and pseudo exits with status 1 at the end. Large inputs are sent
// in batches, with a progress bar on a terminal.
//
// Connection flags: -addr host:port; -ca, -cert, -key for mTLS; -insecure
// for a plaintext dev server on loopback, where -principal names the caller.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	switch e := err.(type) {
	case nil:
		return 0
	case usageError:
		fmt.Fprintf(stderr, "pseudo: %s\n%s", e.msg, usage)
		return 2
	case itemsFailed:
		fmt.Fprintf(stderr, "pseudo: %d of %d items failed\n", e.failed, e.total)
		return 1
	default:
		fmt.Fprintf(stderr, "pseudo: %v\n", err)
		return 1
	}
}

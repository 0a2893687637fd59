// Package client is the SDK of prescriber and pharmacy software: it embeds
// identifiers into ristretto255 points, blinds them, and unblinds the
// service's answers (docs/PROTOCOL.md).
//
//	Client                                    Pseudonymizer(k)
//	B, u := Blind(id)          --B-->
//	                           <--Y, ti--     Y = (s·k)·B, ti = Seal(s)
//	t := u.Unblind(Y, ti)      // pseudonym in transit, for the owner only
//
//	B, u := BlindTransit(t)    --B, ti-->
//	                           <--Y--         Y = (s·k)⁻¹·B
//	id := u.Identify(Y)
//
// The service sees only uniformly random points; the client never sees a
// pseudonym at rest, only transit forms it cannot open. The client holds no
// long-term key: the blinding scalar of each request lives in an Unblinder
// that the caller keeps until the answer arrives and that never prints it.
//
// Client (made by New over a gRPC connection) is the network side: it
// calls the service, splitting large batches, retrying idempotent calls,
// and caching transit pseudonyms until shortly before they expire.
//
// Errors are tested with errors.Is. Those of the protocol (ErrExpired,
// ErrUnknownKid, ...) are the values of package protoerr, under the names
// package owner uses too; an item the service refused is an *ItemError
// that matches the sentinel of its reason and gives the gRPC code.
//
// All operations on secret scalars are constant time. Embedding an
// identifier takes a variable number of tries (about four), which depends
// on the identifier.
package client

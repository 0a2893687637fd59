// Package pseudonymizer is the blind pseudonymization service: it holds each
// domain's scalar k and transit keys, and evaluates blinded points for
// authorized callers (docs/PROTOCOL.md, the pseudonymizer.v1 gRPC API).
//
//	Client (id)                  Pseudonymizer(k, K)                 Owner(K)
//	B = b·M(id)      --B-->      s random
//	                 <--Y, ti--  Y = (s·k)·B, ti = Seal_K(s)
//	P_T = b⁻¹·Y      ------------------ P_T, ti ------------------>  P = s⁻¹·P_T
//
//	identify:        --b·P_T, ti-->   Y = (s·k)⁻¹·B                  (never owners)
//	convert (A→B):   --b·P_T, ti_A--> Y = (s'·k_B·(s·k_A)⁻¹)·B, ti_B = Seal_{K_B}(s')
//
// The service is blind: it only ever sees uniformly random points (b·M,
// b·P_T), never an identifier or a pseudonym.
//
// [Domain] and its batch functions ([Domain.PseudonymizeBatch],
// [Domain.IdentifyBatch], [ConvertBatch]) are the cryptographic core; a
// batch of identify or convert items costs a single scalar inversion, and
// k⁻¹ is computed once per key version ([NewDomain]).
//
// [Server] is the gRPC handler of pseudonymizer.v1: it reads domains from a
// [KeySource] (a *keys.Cache), checks each domain's policy against the
// caller's principal (see [Server] for the rules), evaluates batches, and
// reports per-item failures as google.rpc.Status values with an ErrorInfo
// reason. Identity (mTLS, JWT), rate limits, audit logs and metrics are the
// interceptors' business (internal/grpcserver wires them).
//
// All operations on secret values (k, k⁻¹, transit scalars, transit keys)
// are constant time. No error message, status, log record or metric of this
// package contains a point, a scalar, a key, an identifier or a pseudonym:
// statuses carry fixed messages chosen by one function (toStatus).
package pseudonymizer

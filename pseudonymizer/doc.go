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
// This package is the evaluation core, and nothing else: [Domain] and its
// batch functions ([Domain.PseudonymizeBatch], [Domain.IdentifyBatch],
// [ConvertBatch]), with the per-key seal limit ([SealLimiter]). A batch of
// identify or convert items costs a single scalar inversion, and k⁻¹ is
// computed once per key version ([NewDomain]). A panic while evaluating a
// batch is recovered: the items of that chunk fail with [ErrInternal].
// It knows no transport, no caller and no policy: the gRPC handler of
// pseudonymizer.v1 (authentication, each domain's policy, per-item
// statuses, audit, rate limits, metrics) is in internal/grpcserver, which
// uses it. Arrows point one way: cmd → internal/grpcserver → pseudonymizer →
// keys, internal/transit, internal/point.
//
// All operations on secret values (k, k⁻¹, transit scalars, transit keys)
// are constant time. No error of this package contains a point, a scalar,
// a key, an identifier or a pseudonym.
package pseudonymizer

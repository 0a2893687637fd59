// Package keyshare is the Vault secrets engine that holds the second share
// of split domain keys and multiplies points by it.
//
// A split domain's scalar is k = k₁·k₂ mod ℓ. The service holds k₁ (in
// Vault KV or in a file, see keys/vault); k₂ is drawn here from crypto/rand,
// kept in the plugin's Vault storage (encrypted by Vault's barrier) and
// returned by no endpoint. The service evaluates with k₁ as in single mode,
// then sends the points, already blinded by the client's b and the
// service's s, to [PathMultiply], which multiplies them by k₂
// (pseudonymize), k₂⁻¹ (identify) or k₂,B·k₂,A⁻¹ (convert). Clients and
// owners see no difference.
//
// The binary is cmd/pseudonymizer-vault-plugin; vault/policies/ has the
// policies: the service may multiply and read a domain's metadata,
// administrators may create, split, refresh, read metadata and delete, and
// nobody can read k₂ because no endpoint returns it.
//
// # Endpoints
//
// Under the mount (e.g. "pseudonymizer-shares/"):
//
//	multiply                 patch, update
//	                                 {"groups": [{"op": "pseudonymize"|"identify"|"convert",
//	                                   "domain": d, "generation": g,
//	                                   "to_domain": b, "to_generation": gb,   (convert)
//	                                   "points": base64(n×32 bytes)}, …]}
//	                         →       {"results": [{"points": base64(n×32 bytes),
//	                                   "errors": [{"index": i, "error": "invalid_point"}],
//	                                   "error": ""|"unknown_domain"|"unknown_generation"|"internal"}, …]}
//	domains/                 list    the split domains
//	domains/<d>              update  create a split domain: draw k₂, generation 1
//	domains/<d>              read    {"generation", "previous_generation", "previous_last_used",
//	                                  "origin": "created"|"split", "created", "refreshed"}
//	domains/<d>              delete  destroy the domain's shares
//	domains/<d>/split        update  {"k": base64} → {"k1": base64, "generation": 1}
//	domains/<d>/refresh      update  {"generation": g, "force": bool} → {"r": base64, "generation": g+1}
//	config                   read, update {"max_batch", "previous_grace"}
//
// The service multiplies with PATCH (Content-Type
// application/merge-patch+json; the body is the request above, not a
// patch): before a PUT or POST Vault first asks the plugin whether the
// path's resource exists, a round trip of its own to the plugin process,
// and before a PATCH it does not. PUT and POST do the same, for `vault
// write`.
//
// A multiply request holds at most max_batch points in all (default 1000,
// the service's default maximum batch) and every point is validated
// (canonical encoding, not the identity); an invalid point fails alone. A
// group whose domain or generation is unknown fails as a whole.
//
// # Generations
//
// Shares carry a generation. A refresh replaces k₂ by k₂·r⁻¹ under
// generation g+1 and returns r, so that the administrator replaces k₁ by
// k₁·r: k is unchanged, and a stolen old k₁ is useless once the previous
// generation is dropped. The plugin keeps generation g as the previous one
// until the next refresh, which it refuses while generation g was used
// within previous_grace (default 5 minutes; the time is that of the
// plugin's process, and a restarted plugin counts its start as a use):
// replicas that still hold the old k₁ keep working meanwhile. A refresh
// asked again from generation g once g+1 exists returns the same r
// (r = k₂,g·k₂,g+1⁻¹): an administrator whose write of k₁·r failed
// recovers by running it again.
//
// A split hands k to the plugin once: it draws k₂ and returns
// k₁ = k·k₂⁻¹. Until the first refresh, the same split asked again with
// the same k (checked against a SHA-256 commitment) returns the same k₁, so
// that an interrupted migration can be run again; any other k is refused,
// so the endpoint is no oracle for k₂.
package keyshare

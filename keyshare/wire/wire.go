// Package wire is the JSON of the key-share plugin's multiply endpoint
// (package keyshare), which both the plugin and the service's client
// (package keys/vault) read and write. It depends on nothing, so that the
// service does not link Vault's plugin SDK for it.
package wire

// Operations of a multiply group.
const (
	OpPseudonymize = "pseudonymize"
	OpIdentify     = "identify"
	OpConvert      = "convert"
)

// Request is the body of a multiply request.
type Request struct {
	Groups []Group `json:"groups"`
}

// Group is one group of a multiply request: points of one operation on
// one generation of one domain (two for convert).
type Group struct {
	Op           string `json:"op"`
	Domain       string `json:"domain"`
	Generation   uint64 `json:"generation"`
	ToDomain     string `json:"to_domain,omitempty"`
	ToGeneration uint64 `json:"to_generation,omitempty"`
	// Points is the standard base64 of the points' 32-byte encodings, one
	// after the other.
	Points string `json:"points"`
}

// ItemError is the error of one point of a group.
type ItemError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Result is the answer to one group, in the order of the request.
type Result struct {
	// Points holds one 32-byte point per input point (zeros where the item
	// failed), in standard base64; empty when the whole group failed.
	Points string      `json:"points,omitempty"`
	Errors []ItemError `json:"errors,omitempty"`
	// Error, when set, is the error of every point of the group.
	Error string `json:"error,omitempty"`
}

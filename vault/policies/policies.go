// Package policies holds the Vault ACL policies of the pseudonymizer, as
// files (service.hcl, admin.hcl, owner.hcl.tmpl) that operators write with
// `vault policy write`, and embedded for programs and tests.
//
// They assume the KV v2 engine mounted at "pseudonymizer/"; the layout is
// documented in package keys/vault.
package policies

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// Service is the policy of the pseudonymization service: read every
// domain, never the owners' keys.
//
//go:embed service.hcl
var Service string

// Admin is the policy of administrators (pseudoctl): create and rotate,
// never read a scalar or an owner key.
//
//go:embed admin.hcl
var Admin string

// Migrate is the policy of the one-time migration of domains to split
// mode (pseudoctl domain split), given with Admin: read a domain's whole
// scalar k, once, to hand it to the plugin.
//
//go:embed migrate.hcl
var Migrate string

//go:embed owner.hcl.tmpl
var ownerTemplate string

var ownerTmpl = template.Must(template.New("owner.hcl.tmpl").Option("missingkey=error").Parse(ownerTemplate))

// Owner returns the policy of owner for domain: read the domain's meta and
// transit keys and the owner's own k2, nothing else.
func Owner(owner, domain string) (string, error) {
	if !keys.ValidOwner(owner) {
		return "", fmt.Errorf("policies: invalid owner name %q", owner)
	}
	if !keys.ValidName(domain) {
		return "", fmt.Errorf("policies: invalid domain name %q", domain)
	}
	var b bytes.Buffer
	if err := ownerTmpl.Execute(&b, struct{ Owner, Domain string }{owner, domain}); err != nil {
		return "", err
	}
	return b.String(), nil
}

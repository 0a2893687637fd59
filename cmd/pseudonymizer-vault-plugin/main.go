// Command pseudonymizer-vault-plugin is the Vault secrets engine that holds
// the second share k₂ of split pseudonymization domain keys (package
// keyshare). Vault starts it from its plugin directory once it is
// registered:
//
//	cp pseudonymizer-vault-plugin /etc/vault/plugins/
//	vault plugin register -sha256=$(sha256sum /etc/vault/plugins/pseudonymizer-vault-plugin | cut -d' ' -f1) \
//	    secret pseudonymizer-vault-plugin
//	vault secrets enable -path=pseudonymizer-shares pseudonymizer-vault-plugin
//
// It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/ehealth-pseudo/pseudonymizer/internal/cpuprofile"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
)

// profileEnv names the file of the plugin's CPU profile (package
// cpuprofile), for scripts/bench-split.sh.
const profileEnv = "PSEUDONYMIZER_PLUGIN_CPUPROFILE"

func main() {
	// Warnings and errors only: the SDK's default (trace) costs every
	// request a log line through Vault. Nothing the plugin logs holds a
	// point or a key.
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr, JSONFormat: true})
	// Off unless PSEUDONYMIZER_PLUGIN_CPUPROFILE is set (benchmarks; Vault's
	// environment reaches the plugin process).
	cpuprofile.OnSignal(profileEnv, nil, logger.Warn)
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: keyshare.Factory, Logger: logger}); err != nil {
		fmt.Fprintln(os.Stderr, "pseudonymizer-vault-plugin:", err)
		os.Exit(1)
	}
}

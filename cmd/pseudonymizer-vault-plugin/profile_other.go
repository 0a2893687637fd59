//go:build !unix

package main

import "github.com/hashicorp/go-hclog"

// profileOnSignal does nothing where there are no SIGUSR1 and SIGUSR2.
func profileOnSignal(hclog.Logger) (stop func()) { return func() {} }

package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of the server's TLS configuration.
type TLSFiles struct {
	// Cert and Key are the server's certificate (chain) and private key.
	Cert, Key string
	// ClientCA holds the CA certificates that verify client certificates
	// (mTLS). Without it no client certificate is accepted, and callers
	// must present bearer tokens.
	ClientCA string
	// OptionalClientCert lets a client connect without a certificate, to
	// authenticate its calls with bearer tokens instead. Otherwise a
	// connection without a verified client certificate is refused during
	// the handshake.
	OptionalClientCert bool
}

// ServerTLSConfig loads the files into a TLS configuration for the gRPC
// server: TLS 1.2 or later and, with a client CA, client certificates
// verified against it.
func ServerTLSConfig(f TLSFiles) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("auth: TLS needs a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("auth: loading the TLS certificate %s and key %s: %v", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if f.ClientCA != "" {
		pemCA, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("auth: reading the client CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCA) {
			return nil, fmt.Errorf("auth: %s holds no PEM certificate", f.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		if f.OptionalClientCert {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return cfg, nil
}

package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
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
//
// The files are watched: a handshake at least a second after the last
// check looks at their modification times and sizes, and reloads them when
// they changed, so that a renewed certificate (cert-manager, Vault PKI) or
// CA bundle is used without a restart. A change that does not load (a
// half-written file) keeps the previous configuration until it does.
func ServerTLSConfig(f TLSFiles) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("auth: TLS needs a certificate and a key file")
	}
	r := &tlsReloader{files: f}
	if _, err := r.get(time.Now()); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.get(time.Now())
		},
	}, nil
}

// tlsReloader keeps the configuration loaded from TLSFiles current.
type tlsReloader struct {
	files   TLSFiles
	mu      sync.Mutex
	checked time.Time
	stamp   string
	cur     *tls.Config
}

func (r *tlsReloader) get(now time.Time) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil && now.Sub(r.checked) < time.Second {
		return r.cur, nil
	}
	r.checked = now
	st := fileStamp(r.files.Cert, r.files.Key, r.files.ClientCA)
	if r.cur != nil && st == r.stamp {
		return r.cur, nil
	}
	cfg, err := loadTLS(r.files)
	if err != nil {
		if r.cur != nil {
			return r.cur, nil // keep serving; the files may be mid-update
		}
		return nil, err
	}
	r.cur, r.stamp = cfg, st
	return cfg, nil
}

// fileStamp sums up the modification times and sizes of the files.
func fileStamp(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
		} else {
			fmt.Fprintf(&b, "%s:missing;", p)
		}
	}
	return b.String()
}

func loadTLS(f TLSFiles) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("auth: loading the TLS certificate %s and key %s: %v", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
		// The configuration is returned by GetConfigForClient, which
		// bypasses what grpc's credentials add: HTTP/2 must be offered here.
		NextProtos: []string{"h2"},
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

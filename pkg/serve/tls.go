package serve

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves the key pair in certFile and keyFile, and picks up a
// new pair when the files change (cert-manager renewing a mounted Secret):
// at most once a second it compares the files' modification times and
// sizes. A changed pair that does not load is logged, and the last good
// one is served until the files change again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // of the files last tried
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, every: time.Second}
	r.stamp = r.stampFiles()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key pair %s, %s: %w", certFile, keyFile, err)
	}
	r.cert, r.checked = &c, time.Now()
	return r, nil
}

// GetCertificate is for tls.Config.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < r.every {
		return r.cert, nil
	}
	r.checked = time.Now()
	stamp := r.stampFiles()
	if stamp == r.stamp {
		return r.cert, nil
	}
	r.stamp = stamp
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.log.Error("the TLS key pair changed on disk but does not load; still serving the previous one",
			"cert_file", r.certFile, "key_file", r.keyFile, "err", err)
		return r.cert, nil
	}
	r.cert = &c
	r.log.Info("TLS key pair reloaded", "cert_file", r.certFile, "not_after", c.Leaf.NotAfter)
	return r.cert, nil
}

// stampFiles sums up what identifies a version of the files.
func (r *certReloader) stampFiles() string {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f) // follows the symlinks of a Secret volume
		if err != nil {
			s += "missing;"
			continue
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s
}

// serverTLS are the TLS configurations of the public HTTP port and of the
// gRPC port (which alone asks for client certificates).
func serverTLS(s Settings, log *slog.Logger) (httpTLS, grpcTLS *tls.Config, err error) {
	r, err := newCertReloader(s.TLSCertFile, s.TLSKeyFile, log)
	if err != nil {
		return nil, nil, err
	}
	httpTLS = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	grpcTLS = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2"},
	}
	switch s.GRPCClientAuth {
	case ClientAuthRequest:
		grpcTLS.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		grpcTLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if grpcTLS.ClientAuth != tls.NoClientCert {
		if grpcTLS.ClientCAs, err = loadCAs(s.TLSClientCAFile); err != nil {
			return nil, nil, fmt.Errorf("TLS client CA %s: %w", s.TLSClientCAFile, err)
		}
	}
	return httpTLS, grpcTLS, nil
}

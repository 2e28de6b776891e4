package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "dray test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServerTLS: --tls-cert and --tls-key serve HTTPS, session cookies are
// Secure, and bad TLS flags are bad input (exit 2).
func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if code := Main(t.Context(), []string{"init", dir}, nil, &out, &out); code != 0 {
		t.Fatalf("init: %d %s", code, out.String())
	}
	certFile, keyFile, pool := selfSigned(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", certFile}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", certFile, "--tls-key", filepath.Join(dir, "nope.pem")}, "--tls-cert"},
	} {
		var stderr bytes.Buffer
		args := append([]string{"server", "--dir", dir, "--listen", "127.0.0.1:0"}, c.args...)
		if code := Main(t.Context(), args, nil, &out, &stderr); code != ExitBadInput || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("dray %v: exit %d, stderr %q; want exit 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}

	t.Setenv("DRAY_ADMIN_PASSWORD", "tls-test-password")
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs syncedBuffer
	go func() {
		done <- Main(ctx, []string{"server", "--dir", dir, "--listen", "127.0.0.1:0", "--addr-file", addrFile,
			"--tls-cert", certFile, "--tls-key", keyFile, "--no-agent"}, nil, &logs, &logs)
	}()
	defer func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("server exit %d:\n%s", code, logs.String())
		}
	}()
	var url string
	deadline := time.Now().Add(30 * time.Second)
	for url == "" {
		if b, err := os.ReadFile(addrFile); err == nil {
			url = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatalf("the server did not listen in 30s:\n%s", logs.String())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("address %q, want https://", url)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz: %d", resp.StatusCode)
	}
	resp, err = client.Post(url+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"admin","password":"tls-test-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != 200 || len(cookies) != 1 || !cookies[0].Secure || !cookies[0].HttpOnly {
		t.Errorf("login over TLS: %d, cookies %+v; want one Secure HttpOnly session cookie", resp.StatusCode, cookies)
	}
	// Plain HTTP to the TLS port is refused.
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get(strings.Replace(url, "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP to the TLS port answered 200")
		}
	}
}

// syncedBuffer is a bytes.Buffer safe for the server's goroutines.
type syncedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

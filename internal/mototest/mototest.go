// Package mototest starts moto_server, a local endpoint that speaks the wire
// protocols of AWS S3, SSM Parameter Store, Secrets Manager and CloudWatch
// Logs, for tests that drive the real aws-sdk-go-v2 clients against it.
//
// A test calls Start; it is skipped when moto_server is not installed,
// unless DRAY_REQUIRE_MOTO=1 (the test script sets it), when it fails.
package mototest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Region is the region tests use.
const Region = "us-east-1"

// Server is a running moto_server on loopback.
type Server struct {
	URL string
}

// Config returns an aws.Config of static test credentials in Region; give
// the client the Server's URL as its BaseEndpoint.
func (s *Server) Config() aws.Config {
	return aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	}
}

// Env returns the environment that points the SDK's default configuration
// (config.LoadDefaultConfig) at the server, for a dray process.
func (s *Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.URL, "AWS_REGION=" + Region,
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Start starts a moto_server for t, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("DRAY_REQUIRE_MOTO") == "1" {
			t.Fatalf("moto_server is not installed (pip install 'moto[server]'): %v", err)
		}
		t.Skip("moto_server is not installed (pip install 'moto[server]'); DRAY_REQUIRE_MOTO=1 makes this a failure")
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("moto_server: %v", err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/moto-api/data.json", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			return s
		}
		select {
		case err := <-exited:
			t.Fatalf("moto_server exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("moto_server did not answer on %s within 60s:\n%s", s.URL, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a loopback port no one listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

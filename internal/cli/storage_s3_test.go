package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dray-dev/dray/internal/mototest"
)

// s3TestEnv points the AWS SDK's default chain, as `dray server` loads it,
// at moto: its endpoint and static test credentials, and nothing else of
// this machine's (no profile, config file or instance role).
func s3TestEnv(t *testing.T, srv *mototest.Server) {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL": srv.URL, "AWS_ENDPOINT_URL_S3": "",
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
		"AWS_REGION": mototest.Region, "AWS_DEFAULT_REGION": "", "AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	} {
		t.Setenv(k, v)
	}
}

// TestServerS3Storage: `dray server` with storage on s3://bucket/prefix
// (moto) fails at start when the bucket is wrong; with a good bucket, a
// running task's log is live from the server while nothing is in S3 yet,
// and once the attempt ends its closed segment lands in S3 under the
// prefix, where the log is read from afterwards.
func TestServerS3Storage(t *testing.T) {
	srv := mototest.Start(t)
	s3TestEnv(t, srv)
	t.Setenv("DRAY_SERVER", "")
	t.Setenv("DRAY_TOKEN", "")
	ctx := t.Context()
	client := s3.NewFromConfig(srv.Config(), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
	})
	const bucket, prefix = "dray-logs", "team-a/"
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	listKeys := func(t *testing.T, under string) []string {
		t.Helper()
		out, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(under)})
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", bucket, under, err)
		}
		var ks []string
		for _, o := range out.Contents {
			ks = append(ks, aws.ToString(o.Key))
		}
		return ks
	}

	// The task prints three lines, waits for the gate file (the test opens
	// it once it has seen them live), then prints three more.
	dir := t.TempDir()
	gate := filepath.Join(t.TempDir(), "gate")
	files := map[string]string{
		"dray.yaml": "version: 1\nstorage: s3://" + bucket + "/" + prefix + "?use_path_style=true\n",
		"pipelines/slow.yaml": `version: 1
name: slow
tasks:
  - name: tick
    run: |
      for i in 1 2 3; do echo "line $i"; sleep 0.2; done
      while [ ! -f '` + gate + `' ]; do sleep 0.05; done
      for i in 4 5 6; do echo "line $i"; sleep 0.2; done
`,
	}
	for name, text := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a wrong bucket fails the start", func(t *testing.T) {
		for _, c := range []struct {
			storage string
			code    int
			want    []string
		}{
			{"s3://no-such-bucket/x?use_path_style=true", 1, []string{
				"storage s3://no-such-bucket/x?use_path_style=true: bucket no-such-bucket does not exist", "NoSuchBucket"}},
			{"gs://" + bucket + "/x", ExitBadInput, []string{
				"storage gs://dray-logs/x: this version of dray keeps logs in file:// or s3:// storage only"}},
		} {
			var out bytes.Buffer
			code := Main(ctx, []string{"server", "--dir", dir, "--listen", "127.0.0.1:0", "--storage", c.storage}, nil, &out, &out)
			if code != c.code {
				t.Errorf("dray server --storage %s: exit %d, want %d:\n%s", c.storage, code, c.code, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("dray server --storage %s:\n%s\nwant it to say %q", c.storage, out.String(), w)
				}
			}
		}
	})

	// The server with the project's storage, its scheduler and agent.
	t.Setenv("DRAY_ADMIN_PASSWORD", "s3-test-password")
	addrFile := filepath.Join(t.TempDir(), "addr")
	srvCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan int, 1)
	var logs syncedBuffer
	go func() {
		done <- Main(srvCtx, []string{"server", "--dir", dir, "--listen", "127.0.0.1:0", "--addr-file", addrFile}, nil, &logs, &logs)
	}()
	stopped := false
	stopServer := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		if code := <-done; code != 0 {
			t.Errorf("server exit %d:\n%s", code, logs.String())
		}
	}
	defer stopServer()
	var base string
	waitFor(t, 30*time.Second, "the server to listen", func() bool {
		b, err := os.ReadFile(addrFile)
		base = strings.TrimSpace(string(b))
		return err == nil
	}, &logs)

	code, token, stderr := runCLI(t, "token", "create", "--dir", dir, "--name", "s3-test", "--role", "operator")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, stderr)
	}
	token = strings.TrimSpace(token)
	call := func(t *testing.T, method, path, body string, v any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, data)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	var run struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	call(t, http.MethodPost, "/api/v1/runs", `{"pipeline":"slow"}`, &run)
	runID := run.ID
	logTexts := func(t *testing.T) []string {
		t.Helper()
		var page struct {
			Lines []struct {
				Text string `json:"text"`
			} `json:"lines"`
		}
		call(t, http.MethodGet, "/api/v1/runs/"+runID+"/logs?task=tick", "", &page)
		var texts []string
		for _, l := range page.Lines {
			texts = append(texts, l.Text)
		}
		return texts
	}
	first := []string{"line 1", "line 2", "line 3"}
	all := []string{"line 1", "line 2", "line 3", "line 4", "line 5", "line 6"}

	// While the task runs, the server has the lines printed so far, and
	// nothing of the run is in S3.
	var live []string
	waitFor(t, 30*time.Second, "the first lines in the live log", func() bool {
		live = logTexts(t)
		return len(live) >= len(first)
	}, &logs)
	if !slices.Equal(live, first) {
		t.Errorf("live log %q, want %q", live, first)
	}
	call(t, http.MethodGet, "/api/v1/runs/"+runID, "", &run)
	if run.State != "running" {
		t.Errorf("run %s is %s while its task waits for the gate, want running", runID, run.State)
	}
	if ks := listKeys(t, prefix); len(ks) != 0 {
		t.Errorf("S3 has %q while the task runs, want nothing yet", ks)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the run to end", func() bool {
		call(t, http.MethodGet, "/api/v1/runs/"+runID, "", &run)
		return run.State != "running" && run.State != "queued"
	}, &logs)
	if run.State != "succeeded" {
		t.Fatalf("run %s %s, want succeeded:\n%s", runID, run.State, logs.String())
	}

	// The closed segment lands in S3 under the prefix, holding every line.
	var segs []string
	waitFor(t, 30*time.Second, "the segment in S3", func() bool {
		segs = listKeys(t, prefix+"logs/"+runID+"/")
		return len(segs) > 0
	}, &logs)
	if len(segs) != 1 || !regexp.MustCompile(`^team-a/logs/`+runID+`/tick/0-1-\d+\.jsonl$`).MatchString(segs[0]) {
		t.Fatalf("segments in S3 %q, want one team-a/logs/%s/tick/0-1-ID.jsonl", segs, runID)
	}
	obj, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(segs[0])})
	if err != nil {
		t.Fatalf("get %s: %v", segs[0], err)
	}
	var inS3 []string
	sc := bufio.NewScanner(obj.Body)
	for sc.Scan() {
		var l struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: %v: %s", segs[0], err, sc.Bytes())
		}
		inS3 = append(inS3, l.Text)
	}
	obj.Body.Close()
	if !slices.Equal(inS3, all) {
		t.Errorf("segment %s holds %q, want %q", segs[0], inS3, all)
	}
	if got := logTexts(t); !slices.Equal(got, all) {
		t.Errorf("log after the run %q, want %q", got, all)
	}

	// Stopped, the server has finished sealing. `dray logs` on the host
	// reads the log from S3, and only from there: with the object gone,
	// the log is gone.
	stopServer()
	code, stdout, stderr := runCLI(t, "logs", runID, "--dir", dir)
	if code != 0 || !strings.Contains(stdout, "tick | line 1\n") || !strings.Contains(stdout, "tick | line 6\n") {
		t.Errorf("dray logs %s: exit %d\nstdout:\n%s\nstderr:\n%s", runID, code, stdout, stderr)
	}
	if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(segs[0])}); err != nil {
		t.Fatalf("delete %s: %v", segs[0], err)
	}
	code, _, stderr = runCLI(t, "logs", runID, "--dir", dir)
	if want := "read log segment " + strings.TrimPrefix(segs[0], prefix); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("dray logs %s with the segment deleted from S3: exit %d, stderr %q; want exit 1 and %q", runID, code, stderr, want)
	}
}

// waitFor polls cond until it holds, failing t after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; server logs:\n%s", limit, what, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	gblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/mototest"
)

// awsEnv points the SDK's default chain at moto's static test credentials
// and nothing else of this machine's: no profile, config file, endpoint or
// instance role.
func awsEnv(t *testing.T) {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
		"AWS_REGION": mototest.Region, "AWS_DEFAULT_REGION": "", "AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "", "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	} {
		t.Setenv(k, v)
	}
}

// s3Client is a plain SDK client of the moto server, to look behind dray.
func s3Client(srv *mototest.Server) *s3.Client {
	return s3.NewFromConfig(srv.Config(), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
	})
}

// keys lists the object keys in bucket under prefix, as S3 has them.
func keys(t *testing.T, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	out, err := c.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
	}
	var ks []string
	for _, o := range out.Contents {
		ks = append(ks, aws.ToString(o.Key))
	}
	return ks
}

func TestOpenS3(t *testing.T) {
	srv := mototest.Start(t)
	awsEnv(t)
	ctx := t.Context()
	client := s3Client(srv)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("dray-logs")}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	at := "?endpoint=" + srv.URL + "&use_path_style=true"

	open := func(t *testing.T, url string) *blob.Bucket {
		t.Helper()
		b, err := blob.Open(ctx, url, t.TempDir())
		if err != nil {
			t.Fatalf("Open(%s): %v", url, err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}

	t.Run("write read list under a prefix", func(t *testing.T) {
		b := open(t, "s3://dray-logs/team-a/dray"+at)
		data := []byte(`{"seq":1,"ts":"2026-03-10T12:00:00Z","stream":"stdout","text":"hello"}` + "\n")
		const key = "logs/r1/extract/0-1-7.jsonl"
		if err := b.WriteAll(ctx, key, data, nil); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := b.WriteAll(ctx, "logs/r1/load/0-1-8.jsonl", []byte("x\n"), nil); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := b.ReadAll(ctx, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %s: %q, %v; want %q", key, got, err, data)
		}

		var listed []string
		it := b.List(&gblob.ListOptions{Prefix: "logs/r1/"})
		for {
			o, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			listed = append(listed, o.Key)
		}
		if want := []string{key, "logs/r1/load/0-1-8.jsonl"}; !slices.Equal(listed, want) {
			t.Errorf("listed %q, want %q (keys without the prefix)", listed, want)
		}
		if got, want := keys(t, client, "dray-logs", ""), []string{"team-a/dray/" + key, "team-a/dray/logs/r1/load/0-1-8.jsonl"}; !slices.Equal(got, want) {
			t.Errorf("S3 has keys %q, want %q", got, want)
		}

		// Another prefix of the same bucket sees none of it.
		other := open(t, "s3://dray-logs/team-b/"+at)
		if _, err := other.ReadAll(ctx, key); gcerrors.Code(err) != gcerrors.NotFound {
			t.Errorf("read %s under team-b: %v, want NotFound", key, err)
		}

		if err := b.Delete(ctx, "logs/r1/load/0-1-8.jsonl"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if got, want := keys(t, client, "dray-logs", "team-a/"), []string{"team-a/dray/" + key}; !slices.Equal(got, want) {
			t.Errorf("after delete, S3 has keys %q, want %q", got, want)
		}
	})

	t.Run("whole bucket", func(t *testing.T) {
		for _, url := range []string{"s3://dray-logs" + at, "s3://dray-logs/" + at} {
			b := open(t, url)
			if err := b.WriteAll(ctx, "top.txt", []byte("top"), nil); err != nil {
				t.Fatalf("%s: write: %v", url, err)
			}
			if got := keys(t, client, "dray-logs", "top"); !slices.Equal(got, []string{"top.txt"}) {
				t.Errorf("%s: S3 has %q, want [top.txt]", url, got)
			}
		}
	})

	t.Run("endpoint and region from the environment", func(t *testing.T) {
		t.Setenv("AWS_ENDPOINT_URL_S3", srv.URL)
		b := open(t, "s3://dray-logs/from-env?use_path_style=true")
		if err := b.WriteAll(ctx, "a.txt", []byte("a"), nil); err != nil {
			t.Fatalf("write: %v", err)
		}
		if got := keys(t, client, "dray-logs", "from-env/"); !slices.Equal(got, []string{"from-env/a.txt"}) {
			t.Errorf("S3 has %q, want [from-env/a.txt]", got)
		}
	})

	t.Run("server-side encryption", func(t *testing.T) {
		b := open(t, "s3://dray-logs/sse"+at+"&ssetype=AES256")
		if err := b.WriteAll(ctx, "k", []byte("v"), nil); err != nil {
			t.Fatalf("write: %v", err)
		}
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("dray-logs"), Key: aws.String("sse/k")})
		if err != nil {
			t.Fatalf("head sse/k: %v", err)
		}
		if head.ServerSideEncryption != types.ServerSideEncryptionAes256 {
			t.Errorf("sse/k encrypted with %q, want AES256", head.ServerSideEncryption)
		}
	})

	// Each failure is at Open, names the URL, says what to check and keeps
	// the AWS error.
	failures := []struct {
		name, url string
		want      []string
	}{
		{"missing bucket", "s3://no-such-bucket/p" + at, []string{
			"storage s3://no-such-bucket/p" + at + ": bucket no-such-bucket does not exist",
			"NoSuchBucket",
		}},
		{"unreachable endpoint", "s3://dray-logs/p?endpoint=http://127.0.0.1:1&use_path_style=true", []string{
			"storage s3://dray-logs/p?endpoint=http://127.0.0.1:1&use_path_style=true: cannot reach S3 to list bucket dray-logs",
			"connection refused",
		}},
		{"no bucket", "s3:///prefix", []string{"storage s3:///prefix: no bucket: want s3://BUCKET/PREFIX"}},
		{"empty", "s3://", []string{"storage s3://: no bucket"}},
		{"host and port", "s3://minio:9000/logs", []string{"minio:9000 is not a bucket name: give an S3-compatible endpoint as ?endpoint=http://HOST:PORT"}},
		{"bad escape", "s3://b/%zz", []string{`storage "s3://b/%zz": want s3://BUCKET/PREFIX`}},
		{"unknown parameter", "s3://b/p?prefix=x", []string{`unknown query parameter "prefix" (known: endpoint, kmskeyid, profile, region, ssetype, use_path_style)`}},
		{"bad bool", "s3://b/p?use_path_style=maybe", []string{"use_path_style=maybe: want true or false"}},
		{"bad endpoint", "s3://b/p?endpoint=127.0.0.1:9000", []string{`endpoint "127.0.0.1:9000": want a URL such as http://127.0.0.1:9000`}},
		{"bad ssetype", "s3://b/p?ssetype=DES", []string{"ssetype=DES: want AES256, aws:kms or aws:kms:dsse"}},
		{"parameter twice", "s3://b/p?region=a&region=b", []string{"query parameter region is given 2 times"}},
		{"other scheme", "gs://b/p", []string{"storage gs://b/p: scheme gs is not supported by this dray (file, mem, s3)"}},
		{"not a URL", "dray-logs", []string{`storage "dray-logs": want a URL such as file://.dray/storage or s3://bucket/prefix`}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			b, err := blob.Open(ctx, tt.url, t.TempDir())
			if err == nil {
				b.Close()
				t.Fatalf("Open(%s) succeeded", tt.url)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open(%s):\n%v\nwant it to contain %q", tt.url, err, w)
				}
			}
		})
	}

	t.Run("credentials in the URL", func(t *testing.T) {
		for _, url := range []string{"s3://AKIDEXAMPLE:hunter2@dray-logs/p", "s3://AKIDEXAMPLE:hunter2@dray-logs/%zz"} {
			_, err := blob.Open(ctx, url, "")
			if err == nil || !strings.Contains(err.Error(), "credentials do not go in") || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Open with credentials in the URL: %v; want a refusal that does not repeat the secret", err)
			}
		}
	})

	t.Run("no region", func(t *testing.T) {
		t.Setenv("AWS_REGION", "")
		_, err := blob.Open(ctx, "s3://dray-logs/p"+at, "")
		if err == nil || !strings.Contains(err.Error(), "no AWS region: set AWS_REGION, or add ?region=REGION to the URL") {
			t.Errorf("Open without a region: %v", err)
		}
		b := open(t, "s3://dray-logs/p"+at+"&region="+mototest.Region)
		if err := b.WriteAll(ctx, "k", []byte("v"), nil); err != nil {
			t.Errorf("write with ?region=: %v", err)
		}
	})

	// Last: moto accepts any credentials until told to check them; then
	// the test's access key is one it does not know.
	t.Run("refused credentials", func(t *testing.T) {
		motoAuth(t, srv, "0")
		t.Cleanup(func() { motoAuth(t, srv, "inf") })
		_, err := blob.Open(ctx, "s3://dray-logs/p"+at, "")
		if err == nil {
			t.Fatal("Open with credentials moto does not know succeeded")
		}
		for _, w := range []string{"storage s3://dray-logs/p" + at + ": the AWS credentials were refused listing bucket dray-logs", "InvalidAccessKeyId"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open:\n%v\nwant it to contain %q", err, w)
			}
		}
	})
}

// motoAuth makes moto check credentials after n more unchecked requests
// ("inf": never).
func motoAuth(t *testing.T, srv *mototest.Server, n string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/moto-api/reset-auth", strings.NewReader(n))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("moto reset-auth %s: %v", n, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto reset-auth %s: %s", n, resp.Status)
	}
}

package blob

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

// S3Params are the query parameters an s3:// storage URL may carry. They
// mean what they mean in gocloud.dev's s3blob URLs.
var S3Params = []string{"endpoint", "kmskeyid", "profile", "region", "ssetype", "use_path_style"}

// checkTimeout bounds Open's check that the bucket is reachable, so a
// blackholed endpoint fails the start instead of hanging it.
const checkTimeout = 30 * time.Second

// OpenS3 opens s3://BUCKET/PREFIX?PARAMS: the objects of the returned
// Bucket live under PREFIX/ in BUCKET (the whole bucket when PREFIX is
// empty).
//
// The client comes from the AWS SDK's default configuration
// (config.LoadDefaultConfig: AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID,
// AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_S3, shared config files, the
// container or instance role). The query parameters override it:
//
//   - region: the bucket's region.
//   - profile: the shared config profile.
//   - endpoint: an S3-compatible endpoint (MinIO, a local one), such as
//     http://127.0.0.1:9000.
//   - use_path_style: true to address the bucket in the path rather than the
//     host name (MinIO and other local endpoints need it).
//   - ssetype (AES256, aws:kms, aws:kms:dsse) and kmskeyid: the server-side
//     encryption of the objects written, for buckets whose policy demands it.
//
// OpenS3 lists one object under PREFIX before it returns, so a missing
// bucket, refused credentials or an unreachable endpoint are an error here,
// which names the URL and the AWS error.
func OpenS3(ctx context.Context, rawURL string) (*Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		if strings.Contains(rawURL, "@") {
			// The parse error repeats the URL, and with it what may be a secret.
			return nil, errors.New("storage s3://…: not a URL; want s3://BUCKET/PREFIX (credentials do not go in it)")
		}
		return nil, fmt.Errorf("storage %q: want s3://BUCKET/PREFIX: %w", rawURL, err)
	}
	// The name shown in errors: credentials in the URL never reach a log.
	name := rawURL
	if u.User != nil {
		name = u.Redacted()
	}
	if u.Scheme != "s3" {
		return nil, fmt.Errorf("storage %s: want s3://BUCKET/PREFIX", name)
	}
	if u.User != nil {
		return nil, fmt.Errorf("storage %s: credentials do not go in the URL: dray takes them from the AWS default chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance or task role)", name)
	}
	bucket := u.Host
	switch {
	case bucket == "":
		return nil, fmt.Errorf("storage %s: no bucket: want s3://BUCKET/PREFIX", name)
	case u.Port() != "":
		return nil, fmt.Errorf("storage %s: %s is not a bucket name: give an S3-compatible endpoint as ?endpoint=http://HOST:PORT", name, bucket)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}

	var (
		loadOpts  []func(*config.LoadOptions) error
		endpoint  string
		pathStyle *bool
		bopts     s3blob.Options
	)
	for key, vals := range u.Query() {
		if len(vals) != 1 {
			return nil, fmt.Errorf("storage %s: query parameter %s is given %d times", name, key, len(vals))
		}
		v := vals[0]
		switch key {
		case "region":
			loadOpts = append(loadOpts, config.WithRegion(v))
		case "profile":
			loadOpts = append(loadOpts, config.WithSharedConfigProfile(v))
		case "endpoint":
			e, err := url.Parse(v)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
				return nil, fmt.Errorf("storage %s: endpoint %q: want a URL such as http://127.0.0.1:9000 or https://s3.example.com", name, v)
			}
			endpoint = v
		case "use_path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("storage %s: use_path_style=%s: want true or false", name, v)
			}
			pathStyle = &b
		case "ssetype":
			i := slices.IndexFunc(types.ServerSideEncryption("").Values(), func(t types.ServerSideEncryption) bool {
				return strings.EqualFold(string(t), v)
			})
			if i < 0 {
				return nil, fmt.Errorf("storage %s: ssetype=%s: want AES256, aws:kms or aws:kms:dsse", name, v)
			}
			bopts.EncryptionType = types.ServerSideEncryption("").Values()[i]
		case "kmskeyid":
			bopts.KMSEncryptionID = v
		default:
			return nil, fmt.Errorf("storage %s: unknown query parameter %q (known: %s)", name, key, strings.Join(S3Params, ", "))
		}
	}

	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("storage %s: load the AWS configuration: %w", name, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("storage %s: no AWS region: set AWS_REGION, or add ?region=REGION to the URL", name)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		if pathStyle != nil {
			o.UsePathStyle = *pathStyle
		}
	})
	// The uploader does not take this from the client (see s3blob.URLOpener).
	bopts.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	b, err := s3blob.OpenBucket(ctx, client, bucket, &bopts)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", name, err)
	}
	if prefix != "" {
		b = blob.PrefixedBucket(b, prefix)
	}

	checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if _, _, err := b.ListPage(checkCtx, blob.FirstPageToken, 1, nil); err != nil {
		b.Close()
		return nil, fmt.Errorf("storage %s: %s: %w", name, listProblem(bucket, prefix, err), err)
	}
	return b, nil
}

// listProblem says in a user's terms why listing the bucket failed.
func listProblem(bucket, prefix string, err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchBucket":
			return fmt.Sprintf("bucket %s does not exist (check its name, and the account, region and endpoint)", bucket)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return fmt.Sprintf("the AWS credentials were refused listing bucket %s (check AWS_PROFILE, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the role)", bucket)
		case "AccessDenied", "Forbidden", "AllAccessDisabled":
			return fmt.Sprintf("access denied listing bucket %s: the server needs s3:ListBucket on it, and s3:GetObject, s3:PutObject and s3:DeleteObject on %s*", bucket, prefix)
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return fmt.Sprintf("bucket %s is in another region (set ?region=REGION or AWS_REGION)", bucket)
		}
		return fmt.Sprintf("cannot list bucket %s", bucket)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer from S3 listing bucket %s within %s (check the endpoint and the network)", bucket, checkTimeout)
	}
	var sendErr *smithyhttp.RequestSendError
	if errors.As(err, &sendErr) {
		return fmt.Sprintf("cannot reach S3 to list bucket %s (check the endpoint, AWS_ENDPOINT_URL and the network)", bucket)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("cannot list bucket %s (HTTP %d)", bucket, re.HTTPStatusCode())
	}
	return fmt.Sprintf("cannot list bucket %s (check the credentials, region and endpoint)", bucket)
}

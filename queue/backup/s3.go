package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// TargetConfig names an S3-compatible bucket. Credentials come from the
// standard AWS chain (environment, shared files, instance roles).
type TargetConfig struct {
	// Bucket name. Required.
	Bucket string
	// Prefix of every object key, e.g. "sealpost/". Optional.
	Prefix string
	// Region of the bucket, e.g. "eu-central-1". Required unless the
	// environment sets one.
	Region string
	// Endpoint overrides the S3 endpoint URL (MinIO, Ceph, a test
	// server). Optional.
	Endpoint string
	// PathStyle addresses the bucket in the path rather than the host
	// name, as most S3-compatible servers need. Default false.
	PathStyle bool
	// Timeout bounds one request, retries included. Default 2 minutes.
	Timeout time.Duration
}

// Target is one bucket (and prefix) that backups are written to.
type Target struct {
	cfg    TargetConfig
	client *s3.Client
}

// NewTarget returns a Target for c. It calls nothing yet.
func NewTarget(ctx context.Context, c TargetConfig) (*Target, error) {
	if c.Bucket == "" {
		return nil, errors.New("backup: bucket is required")
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	var opts []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("backup: aws config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("backup: no region: set it in the config or AWS_REGION")
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		// Objects are checked against the manifest's SHA-256 instead.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return &Target{cfg: c, client: client}, nil
}

// String names the target in logs: bucket and prefix.
func (t *Target) String() string { return "s3://" + t.cfg.Bucket + "/" + t.cfg.Prefix }

func (t *Target) key(name string) string { return t.cfg.Prefix + name }

// put stores data under name.
func (t *Target) put(ctx context.Context, name string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	_, err := t.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(t.cfg.Bucket), Key: aws.String(t.key(name)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return fmt.Errorf("backup: put %s%s: %w", t, name, err)
	}
	return nil
}

// errNoObject reports an object that does not exist.
var errNoObject = errors.New("backup: no such object")

// get reads the object name, refusing one larger than limit bytes.
func (t *Target) get(ctx context.Context, name string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	out, err := t.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(t.cfg.Bucket), Key: aws.String(t.key(name))})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) {
			return nil, fmt.Errorf("%w: %s%s", errNoObject, t, name)
		}
		return nil, fmt.Errorf("backup: get %s%s: %w", t, name, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("backup: get %s%s: %w", t, name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("backup: %s%s is larger than %d bytes", t, name, limit)
	}
	return b, nil
}

// list returns the names (without the target's prefix) of the objects
// under prefix, or with delim the distinct name parts up to it.
func (t *Target) list(ctx context.Context, prefix, delim string) ([]string, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(t.cfg.Bucket), Prefix: aws.String(t.key(prefix))}
	if delim != "" {
		in.Delimiter = aws.String(delim)
	}
	var names []string
	p := s3.NewListObjectsV2Paginator(t.client, in)
	for p.HasMorePages() {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
		page, err := p.NextPage(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("backup: list %s%s: %w", t, prefix, err)
		}
		for _, o := range page.Contents {
			names = append(names, strings.TrimPrefix(aws.ToString(o.Key), t.cfg.Prefix))
		}
		for _, cp := range page.CommonPrefixes {
			names = append(names, strings.TrimPrefix(aws.ToString(cp.Prefix), t.cfg.Prefix))
		}
	}
	return names, nil
}

// erase removes every version of every object under prefix, so that
// nothing of it stays in a versioned bucket either. Objects under an
// Object Lock retention cannot be erased; that is an error.
func (t *Target) erase(ctx context.Context, prefix string) (int, error) {
	n := 0
	p := s3.NewListObjectVersionsPaginator(t.client, &s3.ListObjectVersionsInput{Bucket: aws.String(t.cfg.Bucket), Prefix: aws.String(t.key(prefix))})
	type version struct{ key, id *string }
	var all []version
	for p.HasMorePages() {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
		page, err := p.NextPage(ctx)
		cancel()
		if err != nil {
			return n, fmt.Errorf("backup: list versions %s%s: %w", t, prefix, err)
		}
		for _, v := range page.Versions {
			all = append(all, version{v.Key, v.VersionId})
		}
		for _, m := range page.DeleteMarkers {
			all = append(all, version{m.Key, m.VersionId})
		}
	}
	for _, v := range all {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
		_, err := t.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(t.cfg.Bucket), Key: v.key, VersionId: v.id})
		cancel()
		if err != nil {
			return n, fmt.Errorf("backup: delete %s: %w", aws.ToString(v.key), err)
		}
		n++
	}
	return n, nil
}

package kms

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// DefaultAWSTimeout bounds one AWS KMS call, retries included, when the
// caller's context has no earlier deadline.
const DefaultAWSTimeout = 10 * time.Second

// AWSConfig configures the aws provider.
type AWSConfig struct {
	// KeyID names the symmetric encryption KMS key: a key id, key ARN,
	// alias name ("alias/sealpost") or alias ARN. Required.
	KeyID string
	// Region is the AWS region, e.g. "eu-central-1". Optional when the
	// standard chain provides one (AWS_REGION, the shared config file).
	Region string
	// Endpoint overrides the KMS endpoint URL, e.g. a VPC endpoint or a
	// local test server: http or https. Optional.
	Endpoint string
	// Timeout bounds one KMS call including retries. Default 10s.
	Timeout time.Duration
}

var _ KEK = (*AWS)(nil)

// AWS is the aws provider: data keys are generated and unwrapped by AWS KMS
// under a customer managed symmetric key. Credentials come from the
// standard AWS chain (environment, shared files, web identity, ECS or EC2
// instance roles).
//
// Key rotation in AWS KMS, yearly or on demand, is transparent: the wrapped
// key names the key material that wrapped it, and KMS keeps every version.
type AWS struct {
	client  *awskms.Client
	keyID   string
	timeout time.Duration
}

// Validate checks c without calling AWS: a key id, an http(s) endpoint
// when one is set, a timeout that is not negative. Its errors name the
// setting; NewAWS's add "kms: aws:".
func (c AWSConfig) Validate() error {
	var errs []error
	if c.KeyID == "" {
		errs = append(errs, errors.New("key id is required"))
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("endpoint must be an http(s) URL, got %q", c.Endpoint))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s is negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// NewAWS returns the aws provider for c. It does not call KMS; the first
// Seal or Open does.
func NewAWS(ctx context.Context, c AWSConfig) (*AWS, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("kms: aws: %w", err)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultAWSTimeout
	}
	var opts []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("kms: aws: load config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("kms: aws: no region: set the region in the config or AWS_REGION")
	}
	client := awskms.NewFromConfig(cfg, func(o *awskms.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	})
	return &AWS{client: client, keyID: c.KeyID, timeout: c.Timeout}, nil
}

// ID returns "aws".
func (a *AWS) ID() string { return "aws" }

// GenerateDataKey asks KMS for an AES_256 data key under ec.
func (a *AWS) GenerateDataKey(ctx context.Context, ec map[string]string) (plaintext, wrapped []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	out, err := a.client.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId:             aws.String(a.keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: ec,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("aws kms: generate data key: %w", err)
	}
	if len(out.Plaintext) != dataKeySize || len(out.CiphertextBlob) == 0 {
		clear(out.Plaintext)
		return nil, nil, fmt.Errorf("aws kms: generate data key: unexpected sizes %d and %d", len(out.Plaintext), len(out.CiphertextBlob))
	}
	return out.Plaintext, out.CiphertextBlob, nil
}

// Decrypt asks KMS to unwrap a data key under ec, pinned to the configured
// key so that a blob wrapped by another key is refused. Errors that will
// not pass (invalid ciphertext, another key, a key not usable for
// decryption) wrap ErrOpen.
func (a *AWS) Decrypt(ctx context.Context, wrapped []byte, ec map[string]string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	out, err := a.client.Decrypt(ctx, &awskms.DecryptInput{
		KeyId:             aws.String(a.keyID),
		CiphertextBlob:    wrapped,
		EncryptionContext: ec,
	})
	if err != nil {
		var (
			invalid  *types.InvalidCiphertextException
			wrongKey *types.IncorrectKeyException
			usage    *types.InvalidKeyUsageException
		)
		if errors.As(err, &invalid) || errors.As(err, &wrongKey) || errors.As(err, &usage) {
			return nil, fmt.Errorf("%w: aws kms: decrypt: %w", ErrOpen, err)
		}
		return nil, fmt.Errorf("aws kms: decrypt: %w", err)
	}
	return out.Plaintext, nil
}

package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sealpost/sealpost/queue/backup/mototest"
)

// startMoto starts moto_server (S3 and KMS) for the test.
func startMoto(t testing.TB) string { return mototest.Start(t) }

// s3Client returns an S3 client on moto for test set-up and inspection.
func s3Client(t testing.TB, endpoint, region string) *s3.Client {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(region))
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
		o.DisableLogOutputChecksumValidationSkipped = true
	})
}

// createBucket makes a bucket on moto, with Object Lock when lock is set.
func createBucket(t testing.TB, endpoint, region, bucket string, lock bool) {
	t.Helper()
	in := &s3.CreateBucketInput{Bucket: aws.String(bucket)}
	if region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
	}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := s3Client(t, endpoint, region).CreateBucket(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

// backupYAML is the backup section of a gateway config on moto.
func backupYAML(endpoint string) string {
	return fmt.Sprintf(`backup:
  every: 0s
  s3: {bucket: sp-backups, region: eu-central-1, endpoint: %[1]s, path_style: true, prefix: gw/}
  copy: {bucket: sp-backups-copy, region: eu-west-1, endpoint: %[1]s, path_style: true, prefix: gw/}
  checkpoints:
    s3: {bucket: sp-worm, region: eu-central-1, endpoint: %[1]s, path_style: true}
    retain: 1h
`, endpoint)
}

func createBackupBuckets(t testing.TB, endpoint string) {
	createBucket(t, endpoint, "eu-central-1", "sp-backups", false)
	createBucket(t, endpoint, "eu-west-1", "sp-backups-copy", false)
	createBucket(t, endpoint, "eu-central-1", "sp-worm", true)
}

package backup

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sealpost/sealpost/queue/backup/mototest"
)

func startMoto(t testing.TB) string { return mototest.Start(t) }

// newBucket creates a bucket on moto (with Object Lock when lock is set)
// and returns a Target on it.
func newBucket(t testing.TB, endpoint, region, bucket string, lock bool) *Target {
	t.Helper()
	ctx := context.Background()
	tg, err := NewTarget(ctx, TargetConfig{Bucket: bucket, Region: region, Endpoint: endpoint, PathStyle: true, Prefix: "sp/"})
	if err != nil {
		t.Fatal(err)
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(bucket)}
	if region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
	}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := tg.client.CreateBucket(ctx, in); err != nil {
		t.Fatal(err)
	}
	return tg
}

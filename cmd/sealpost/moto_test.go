package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// startMoto starts moto_server (S3 and KMS) on a free loopback port, points
// the AWS credential chain at fake credentials and returns the endpoint.
// It skips the test when moto_server is missing, unless
// SEALPOST_REQUIRE_INTEROP=1.
func startMoto(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("moto_server not found and SEALPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("moto_server not found: skipping (install moto[server] to run it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(t.TempDir(), "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_CONFIG_FILE": filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"), "AWS_EC2_METADATA_DISABLED": "true",
	} {
		if tb, ok := t.(interface{ Setenv(k, v string) }); ok {
			tb.Setenv(k, v)
		} else {
			os.Setenv(k, v)
		}
	}
	return endpoint
}

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

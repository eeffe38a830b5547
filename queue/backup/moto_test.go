package backup

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
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// StartMoto starts moto_server on a free loopback port, points the AWS
// credential chain at fake credentials and returns the endpoint. It skips
// the test when moto_server is missing, unless SEALPOST_REQUIRE_INTEROP=1.
func startMoto(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("moto_server not found and SEALPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("moto_server not found: skipping the S3 test (install moto[server] to run it)")
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

package kms

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
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// requireTool returns the path of an interop tool, skipping the test when
// it is missing unless SEALPOST_REQUIRE_INTEROP=1.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf("%s not found and SEALPOST_REQUIRE_INTEROP=1", name)
	}
	t.Skipf("%s not found: skipping the AWS KMS interop test (install moto[server] to run it)", name)
	return ""
}

// startMoto starts moto_server on a free 127.0.0.1 port, waits until it
// answers, points the standard AWS credential chain at fake credentials and
// returns the endpoint URL. The server is killed when the test ends.
func startMoto(t testing.TB) string {
	t.Helper()
	bin := requireTool(t, "moto_server")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logPath := filepath.Join(t.TempDir(), "moto.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
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
			out, _ := os.ReadFile(logPath)
			t.Fatalf("moto_server did not answer on %s: %v\n%s", endpoint, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The standard credential chain, fed through the environment; shared
	// files and instance metadata are kept out of the way.
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "testing",
		"AWS_SECRET_ACCESS_KEY":       "testing",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		if tb, ok := t.(interface{ Setenv(k, v string) }); ok {
			tb.Setenv(k, v)
		} else {
			os.Setenv(k, v)
		}
	}
	return endpoint
}

const motoRegion = "eu-central-1"

// motoAdmin returns a KMS client for setting up keys on moto.
func motoAdmin(t testing.TB, endpoint string) *awskms.Client {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(motoRegion))
	if err != nil {
		t.Fatal(err)
	}
	return awskms.NewFromConfig(cfg, func(o *awskms.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// createKey creates a symmetric key with automatic rotation enabled and an
// alias, and returns its key id and ARN.
func createKey(t testing.TB, admin *awskms.Client, alias string) (id, arn string) {
	t.Helper()
	ctx := context.Background()
	out, err := admin.CreateKey(ctx, &awskms.CreateKeyInput{
		KeySpec:  types.KeySpecSymmetricDefault,
		KeyUsage: types.KeyUsageTypeEncryptDecrypt,
	})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	id, arn = *out.KeyMetadata.KeyId, *out.KeyMetadata.Arn
	if _, err := admin.EnableKeyRotation(ctx, &awskms.EnableKeyRotationInput{KeyId: &id}); err != nil {
		t.Fatalf("EnableKeyRotation: %v", err)
	}
	if _, err := admin.CreateAlias(ctx, &awskms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: &id}); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	return id, arn
}

func newAWS(t testing.TB, c AWSConfig) *AWS {
	t.Helper()
	a, err := NewAWS(context.Background(), c)
	if err != nil {
		t.Fatalf("NewAWS: %v", err)
	}
	return a
}

func TestAWSConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	endpoint := startMoto(t)
	admin := motoAdmin(t, endpoint)
	id, _ := createKey(t, admin, "alias/sealpost")
	createKey(t, admin, "alias/other")

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadEndpoint := "http://" + closed.Addr().String()
	closed.Close()

	runConformance(t, provider{
		kek: func(t *testing.T) KEK {
			return newAWS(t, AWSConfig{KeyID: "alias/sealpost", Region: motoRegion, Endpoint: endpoint})
		},
		other: func(t *testing.T) KEK {
			return newAWS(t, AWSConfig{KeyID: "alias/other", Region: motoRegion, Endpoint: endpoint})
		},
		broken: func(t *testing.T) KEK {
			return newAWS(t, AWSConfig{KeyID: "alias/sealpost", Region: motoRegion, Endpoint: deadEndpoint, Timeout: 2 * time.Second})
		},
		rotate: func(t *testing.T) {
			ctx := context.Background()
			if _, err := admin.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: &id}); err != nil {
				t.Fatalf("RotateKeyOnDemand: %v", err)
			}
			st, err := admin.GetKeyRotationStatus(ctx, &awskms.GetKeyRotationStatusInput{KeyId: &id})
			if err != nil || !st.KeyRotationEnabled {
				t.Fatalf("GetKeyRotationStatus: %+v, %v; want automatic rotation enabled", st, err)
			}
			rot, err := admin.ListKeyRotations(ctx, &awskms.ListKeyRotationsInput{KeyId: &id})
			if err != nil || len(rot.Rotations) == 0 {
				t.Fatalf("ListKeyRotations: %d rotations, %v; want the on-demand rotation", len(rot.Rotations), err)
			}
		},
	})
}

func TestAWSKeyForms(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	endpoint := startMoto(t)
	admin := motoAdmin(t, endpoint)
	id, arn := createKey(t, admin, "alias/forms")
	c := Context{"acme", PurposeDeadLetter, "dlq-1"}
	sealed := mustSeal(t, newEnvelope(t, Config{KEK: newAWS(t, AWSConfig{KeyID: id, Region: motoRegion, Endpoint: endpoint})}), c, []byte("dead"))
	for _, tc := range []struct{ name, keyID string }{
		{"key id", id},
		{"key arn", arn},
		{"alias", "alias/forms"},
		{"alias arn", fmt.Sprintf("arn:aws:kms:%s:123456789012:alias/forms", motoRegion)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvelope(t, Config{KEK: newAWS(t, AWSConfig{KeyID: tc.keyID, Region: motoRegion, Endpoint: endpoint})})
			mustOpen(t, e, c, mustSeal(t, e, c, []byte("x")), []byte("x"))
			mustOpen(t, e, c, sealed, []byte("dead"))
		})
	}
}

func TestNewAWSConfig(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	for _, tc := range []struct {
		name string
		c    AWSConfig
	}{
		{"no key", AWSConfig{Region: motoRegion}},
		{"no region", AWSConfig{KeyID: "alias/x"}},
		{"negative timeout", AWSConfig{KeyID: "alias/x", Region: motoRegion, Timeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewAWS(context.Background(), tc.c); err == nil {
				t.Fatalf("NewAWS(%+v) succeeded", tc.c)
			}
		})
	}
}

package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Checkpoints keeps signed audit checkpoints in a write-once location: a
// bucket with S3 Object Lock, each checkpoint an object under a retention
// that nobody (COMPLIANCE) or only a privileged user (GOVERNANCE) can
// shorten or delete before it ends. A rollback of the audit log in the
// store cannot reach them, so comparing the log with the newest one held
// here detects it.
//
// Checkpoints are public (signed notes), so they are stored as they are,
// not sealed. Names are the caller's; they must sort by age (for example a
// zero-padded tree size), since LatestCheckpoint returns the greatest.
type Checkpoints struct {
	t      *Target
	retain time.Duration
	mode   types.ObjectLockMode
	now    func() time.Time
}

// CheckpointsConfig configures NewCheckpoints.
type CheckpointsConfig struct {
	// Target is the bucket, created with Object Lock enabled. Required.
	Target *Target
	// Retain is how long each checkpoint is locked. Default 400 days (the
	// audit log's 12 months and more).
	Retain time.Duration
	// Mode is "COMPLIANCE" (default: nobody can delete early) or
	// "GOVERNANCE".
	Mode string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// maxCheckpointObject bounds one checkpoint object.
const maxCheckpointObject = 1 << 20

// NewCheckpoints returns the checkpoint store on c.Target.
func NewCheckpoints(c CheckpointsConfig) (*Checkpoints, error) {
	if c.Target == nil {
		return nil, errors.New("backup: checkpoints: target is required")
	}
	if c.Retain == 0 {
		c.Retain = 400 * 24 * time.Hour
	}
	if c.Retain < 0 {
		return nil, errors.New("backup: checkpoints: retain must not be negative")
	}
	mode := types.ObjectLockModeCompliance
	switch c.Mode {
	case "", "COMPLIANCE":
	case "GOVERNANCE":
		mode = types.ObjectLockModeGovernance
	default:
		return nil, fmt.Errorf("backup: checkpoints: mode %q must be COMPLIANCE or GOVERNANCE", c.Mode)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Checkpoints{t: c.Target, retain: c.Retain, mode: mode, now: c.Now}, nil
}

func checkpointName(name string) error {
	if name == "" || len(name) > 200 || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return fmt.Errorf("backup: checkpoint name %q: 1-200 characters without '/'", name)
	}
	return nil
}

// PutCheckpoint stores data under name, locked for the configured
// retention. Storing under a name that exists adds a version; the locked
// earlier one stays.
func (c *Checkpoints) PutCheckpoint(ctx context.Context, name string, data []byte) error {
	if err := checkpointName(name); err != nil {
		return err
	}
	if len(data) > maxCheckpointObject {
		return fmt.Errorf("backup: checkpoint of %d bytes, limit %d", len(data), maxCheckpointObject)
	}
	ctx, cancel := context.WithTimeout(ctx, c.t.cfg.Timeout)
	defer cancel()
	_, err := c.t.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(c.t.cfg.Bucket), Key: aws.String(c.t.key("checkpoints/" + name)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		ContentType:               aws.String("text/plain; charset=utf-8"),
		ObjectLockMode:            c.mode,
		ObjectLockRetainUntilDate: aws.Time(c.now().Add(c.retain).UTC()),
		ChecksumAlgorithm:         types.ChecksumAlgorithmSha256,
	})
	if err != nil {
		return fmt.Errorf("backup: put checkpoint %s: %w", name, err)
	}
	return nil
}

// GetCheckpoint returns the checkpoint stored under name.
func (c *Checkpoints) GetCheckpoint(ctx context.Context, name string) ([]byte, error) {
	if err := checkpointName(name); err != nil {
		return nil, err
	}
	return c.t.get(ctx, "checkpoints/"+name, maxCheckpointObject)
}

// LatestCheckpoint returns the name and data of the checkpoint with the
// greatest name, or ErrNoSnapshot when there is none.
func (c *Checkpoints) LatestCheckpoint(ctx context.Context) (string, []byte, error) {
	names, err := c.t.list(ctx, "checkpoints/", "")
	if err != nil {
		return "", nil, err
	}
	if len(names) == 0 {
		return "", nil, fmt.Errorf("%w: no checkpoint on %s", ErrNoSnapshot, c.t)
	}
	name := strings.TrimPrefix(slices.Max(names), "checkpoints/")
	data, err := c.GetCheckpoint(ctx, name)
	return name, data, err
}

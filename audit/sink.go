package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Only a copy held outside the log's store catches a rollback: whoever can
// put back an older state of the store (a restored snapshot, a truncated
// file store) puts back its checkpoints too. Every checkpoint the log
// stores is therefore also written to a CheckpointSink, and the
// checkpointer (at start and when it takes over) and audit verify compare
// the log with the newest copy there.

// OutsideCheckpoint is a checkpoint as a sink keeps it.
type OutsideCheckpoint struct {
	Origin string
	Size   uint64
	Root   []byte
	// Time is when the log signed it (the record's time).
	Time time.Time
	// Record is the checkpoint record as the checkpoints stream holds it:
	// JSON with the signed note (which alone is trusted) and the compact
	// range the log resumes from.
	Record []byte
}

// CheckpointSink keeps copies of the log's checkpoints outside its store,
// written once each: a directory here, S3 with Object Lock elsewhere.
type CheckpointSink interface {
	// Put stores cp under its size. Storing a size again with the same
	// root succeeds and changes nothing; with another root it fails with
	// an error wrapping ErrFork.
	Put(ctx context.Context, cp OutsideCheckpoint) error
	// Latest returns the record of the largest size stored, or an error
	// wrapping ErrNoCheckpoint when there is none.
	Latest(ctx context.Context) ([]byte, error)
}

// ErrFork reports two signed checkpoints of one size with different roots.
var ErrFork = errors.New("checkpoints of the same size disagree")

// DirSink is a CheckpointSink in a local directory (best on another disk
// or a mount that outlives the data dir): one read-only file per
// checkpoint, <dir>/<YYYY-MM-DD>/<size, 20 digits>.json, created with a
// hard link so an existing file is never replaced.
type DirSink struct {
	Dir string
}

var _ CheckpointSink = (*DirSink)(nil)

var (
	dayDirRE  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	cpFileRE  = regexp.MustCompile(`^\d{20}\.json$`)
	errNoRoom = errors.New("checkpoint record too large")
)

// Put implements CheckpointSink.
func (s *DirSink) Put(ctx context.Context, cp OutsideCheckpoint) error {
	if len(cp.Record) > maxCheckpointRecord {
		return errNoRoom
	}
	day := filepath.Join(s.Dir, cp.Time.UTC().Format(time.DateOnly))
	if err := os.MkdirAll(day, 0o700); err != nil {
		return fmt.Errorf("outside checkpoints: %w", err)
	}
	final := filepath.Join(day, fmt.Sprintf("%020d.json", cp.Size))
	if err := s.same(final, cp); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(day, ".tmp-"+hex.EncodeToString(rnd[:]))
	if err := writeSynced(tmp, cp.Record, 0o444); err != nil {
		return fmt.Errorf("outside checkpoints: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return s.same(final, cp)
		}
		return fmt.Errorf("outside checkpoints: %w", err)
	}
	return syncDir(day)
}

// same reports whether the file holds a checkpoint of cp's size and root
// (nil), another root (ErrFork), or nothing (fs.ErrNotExist).
func (s *DirSink) same(path string, cp OutsideCheckpoint) error {
	b, err := readBounded(path)
	if err != nil {
		return err
	}
	var r checkpointRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("outside checkpoint %s: %w", path, err)
	}
	if r.Size != cp.Size || r.Root != b64.EncodeToString(cp.Root) {
		return fmt.Errorf("%w: %s holds root %s, the log signed %s for size %d", ErrFork, path, r.Root, b64.EncodeToString(cp.Root), cp.Size)
	}
	return nil
}

// maxSinkDays is how many of the newest day directories Latest reads: a
// clock stepped back by a day still finds the newest checkpoint.
const maxSinkDays = 2

// Latest implements CheckpointSink.
func (s *DirSink) Latest(context.Context) ([]byte, error) {
	days, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("outside checkpoints: %w", err)
	}
	var names []string
	for _, d := range days {
		if d.IsDir() && dayDirRE.MatchString(d.Name()) {
			names = append(names, d.Name())
		}
	}
	slices.Sort(names)
	best, bestSize := "", uint64(0)
	read := 0
	for i := len(names) - 1; i >= 0 && read < maxSinkDays; i-- {
		files, err := os.ReadDir(filepath.Join(s.Dir, names[i]))
		if err != nil {
			return nil, fmt.Errorf("outside checkpoints: %w", err)
		}
		found := false
		for _, f := range files {
			if !f.Type().IsRegular() || !cpFileRE.MatchString(f.Name()) {
				continue
			}
			size, err := strconv.ParseUint(f.Name()[:20], 10, 64)
			if err != nil {
				continue
			}
			found = true
			if best == "" || size > bestSize {
				best, bestSize = filepath.Join(s.Dir, names[i], f.Name()), size
			}
		}
		if found {
			read++
		}
	}
	if best == "" {
		return nil, ErrNoCheckpoint
	}
	b, err := readBounded(best)
	if err != nil {
		return nil, fmt.Errorf("outside checkpoints: %w", err)
	}
	return b, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCheckpointRecord+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCheckpointRecord {
		return nil, fmt.Errorf("%s: %w", path, errNoRoom)
	}
	return b, nil
}

func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("outside checkpoints: %w", err)
	}
	return nil
}

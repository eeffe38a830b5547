package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/sealpost/sealpost/queue"
)

// Proofs are built from tiles (the tiling of golang.org/x/mod/sumdb/tlog,
// https://research.swtch.com/tlog#tiling_a_log): a tile at level L holds up
// to 256 consecutive node hashes of tree level 8L, so every node hash of
// the tree is a tile entry or a hash over a few entries of one tile. The
// checkpointer collects them as it integrates leaves (the compact range
// reports every completed node) and writes them before it stores a
// checkpoint: complete tiles once, the newest incomplete tile of each
// level as it grows. A proof reads a handful of tiles, and the reader
// checks every tile it reads against the signed root, so a tile changed in
// the store yields an error, never a false proof.

// tileHeight is the height of a tile: 2^8 hashes.
const (
	tileHeight = 8
	tileWidth  = 1 << tileHeight
	hashSize   = tlog.HashSize
)

// Bucket and subject names of the proof data, by default.
const (
	// TilesBucket holds the tiles and the proof state.
	TilesBucket = "AUDIT_TILES"
	// IndexStream holds the receipt index, subject IndexSubject + "." + the
	// receipt id's group.
	IndexStream  = "AUDIT_INDEX"
	IndexSubject = "audit.index"
)

// proofStateKey names the tiles bucket's record of the tree size up to
// which tiles and the receipt index are complete.
const proofStateKey = "state"

// ErrProofsUnavailable: this log keeps no tiles (no store for them, or a
// log whose entries expired before tiles were kept).
var ErrProofsUnavailable = errors.New("audit: proofs are not available for this log")

// kvStore is what the tiles need of a key-value bucket; *queue.KV is one.
type kvStore interface {
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	Create(ctx context.Context, key string, val []byte) (uint64, error)
	Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error)
	Put(ctx context.Context, key string, val []byte) (uint64, error)
}

var _ kvStore = (*queue.KV)(nil)

func tileKey(level int, n int64) string {
	return strconv.Itoa(level) + "." + strconv.FormatInt(n, 10)
}

// openProofStores declares the tiles bucket and the receipt index stream,
// kept a month longer than the entries like the checkpoints.
func openProofStores(ctx context.Context, c *queue.Conn, retention time.Duration) (*queue.KV, *queue.Stream, error) {
	keep := retention + 30*24*time.Hour
	tiles, err := c.KV(ctx, queue.KVConfig{Bucket: TilesBucket, TTL: keep})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	index, err := c.Stream(ctx, queue.StreamConfig{Name: IndexStream, Subjects: []string{IndexSubject + ".>"}, MaxAge: keep})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	return tiles, index, nil
}

// pendingTile is a complete tile not written yet.
type pendingTile struct {
	level int
	n     int64
	data  []byte
}

// tileBuilder collects the tiles of the tree while leaves are integrated:
// partial[L] holds the hashes of the newest incomplete tile of level L.
type tileBuilder struct {
	partial [][]byte
	full    []pendingTile
}

// visit is the compact range's visitor: it receives every node completed
// by an Append, in order of index on each level.
func (b *tileBuilder) visit(id compact.NodeID, hash []byte) {
	if id.Level%tileHeight != 0 {
		return
	}
	l := int(id.Level / tileHeight)
	for len(b.partial) <= l {
		b.partial = append(b.partial, nil)
	}
	if b.partial[l] == nil {
		b.partial[l] = make([]byte, 0, tileWidth*hashSize)
	}
	b.partial[l] = append(b.partial[l], hash...)
	if len(b.partial[l]) == tileWidth*hashSize {
		b.full = append(b.full, pendingTile{level: l, n: int64(id.Index >> tileHeight), data: b.partial[l]})
		b.partial[l] = nil
	}
}

// maxPendingTiles bounds the complete tiles held before they are written
// (8 KiB each).
const maxPendingTiles = 256

// errTilesBehind: the stored tiles do not reach the size asked for (an
// older log, or a store that lost them); they are rebuilt from the entries.
var errTilesBehind = errors.New("proof tiles are behind the tree")

// loadTiles restores the incomplete tiles of a tree of size from the
// store. It fails with errTilesBehind when the stored tiles do not reach
// size.
func loadTiles(ctx context.Context, kv kvStore, size uint64) (*tileBuilder, error) {
	st, _, err := kv.Get(ctx, proofStateKey)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, fmt.Errorf("%w: no proof state", errTilesBehind)
	}
	if err != nil {
		return nil, err
	}
	done, err := strconv.ParseUint(strings.TrimSpace(string(st)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: proof state %.20q is not a size", errTilesBehind, st)
	}
	if done < size {
		return nil, fmt.Errorf("%w: tiles end at size %d, before %d", errTilesBehind, done, size)
	}
	b := &tileBuilder{}
	for l := 0; size>>(uint(l)*tileHeight) > 0; l++ {
		count := size >> (uint(l) * tileHeight)
		b.partial = append(b.partial, nil)
		w := int(count % tileWidth)
		if w == 0 {
			continue
		}
		key := tileKey(l, int64(count/tileWidth))
		data, _, err := kv.Get(ctx, key)
		if errors.Is(err, queue.ErrNotFound) {
			return nil, fmt.Errorf("%w: tile %s is missing", errTilesBehind, key)
		}
		if err != nil {
			return nil, fmt.Errorf("tile %s: %w", key, err)
		}
		if len(data) < w*hashSize {
			return nil, fmt.Errorf("%w: tile %s holds %d hashes, want %d", errTilesBehind, key, len(data)/hashSize, w)
		}
		b.partial[l] = append(make([]byte, 0, tileWidth*hashSize), data[:w*hashSize]...)
	}
	return b, nil
}

// writeFull writes the complete tiles collected so far.
func (b *tileBuilder) writeFull(ctx context.Context, kv kvStore) error {
	for len(b.full) > 0 {
		t := b.full[0]
		if _, err := kv.Put(ctx, tileKey(t.level, t.n), t.data); err != nil {
			return fmt.Errorf("write tile %s: %w", tileKey(t.level, t.n), err)
		}
		b.full = b.full[1:]
	}
	b.full = nil
	return nil
}

// writePartial writes the incomplete tiles of a tree of size, each only
// when the stored one is shorter (a tile only grows), then the proof
// state.
func (b *tileBuilder) writePartial(ctx context.Context, kv kvStore, size uint64) error {
	for l, data := range b.partial {
		if len(data) == 0 {
			continue
		}
		count := size >> (uint(l) * tileHeight)
		key := tileKey(l, int64(count/tileWidth))
		if err := growKV(ctx, kv, key, data); err != nil {
			return fmt.Errorf("write tile %s: %w", key, err)
		}
	}
	if err := growKV(ctx, kv, proofStateKey, []byte(strconv.FormatUint(size, 10))); err != nil {
		return fmt.Errorf("write proof state: %w", err)
	}
	return nil
}

// growKV stores val under key unless the stored value is at least as
// large: for a tile, as long (tiles only grow); for the proof state, a
// size at least as large. Two checkpointers overlapping for a moment never
// move a value back.
func growKV(ctx context.Context, kv kvStore, key string, val []byte) error {
	for range 3 {
		cur, rev, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			if _, err := kv.Create(ctx, key, val); !errors.Is(err, queue.ErrConflict) {
				return err
			}
			continue
		case err != nil:
			return err
		}
		if !larger(key, val, cur) {
			return nil
		}
		if _, err := kv.Update(ctx, key, val, rev); !errors.Is(err, queue.ErrConflict) {
			return err
		}
	}
	return errors.New("value keeps changing")
}

func larger(key string, val, cur []byte) bool {
	if key != proofStateKey {
		return len(val) > len(cur)
	}
	a, err1 := strconv.ParseUint(string(val), 10, 64)
	b, err2 := strconv.ParseUint(strings.TrimSpace(string(cur)), 10, 64)
	return err1 == nil && (err2 != nil || a > b)
}

// tileReader reads tiles for tlog.TileHashReader, which checks them
// against the tree it is given.
type tileReader struct {
	ctx context.Context
	kv  kvStore
	// reads counts tile reads, for the proof benchmark.
	reads int
}

func (r *tileReader) Height() int { return tileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.L < 0 || t.H != tileHeight {
			return nil, fmt.Errorf("tile %s: unsupported", t.Path())
		}
		data, _, err := r.kv.Get(r.ctx, tileKey(t.L, t.N))
		r.reads++
		if err != nil {
			return nil, fmt.Errorf("tile %s: %w", tileKey(t.L, t.N), err)
		}
		if len(data) < t.W*hashSize {
			return nil, fmt.Errorf("tile %s holds %d hashes, want %d", tileKey(t.L, t.N), len(data)/hashSize, t.W)
		}
		out[i] = data[:t.W*hashSize]
	}
	return out, nil
}

func (r *tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// hashReader returns a reader of the node hashes of the tree of size and
// root, from the stored tiles.
func hashReader(ctx context.Context, kv kvStore, size uint64, root []byte) (tlog.HashReader, *tileReader) {
	tr := &tileReader{ctx: ctx, kv: kv}
	var h tlog.Hash
	copy(h[:], root)
	return tlog.TileHashReader(tlog.Tree{N: int64(size), Hash: h}, tr), tr
}

// proveInclusion returns the RFC 6962 inclusion proof of leaf index in the
// tree of size and root.
func proveInclusion(ctx context.Context, kv kvStore, index, size uint64, root []byte) ([][]byte, error) {
	if index >= size || size > maxIndex {
		return nil, fmt.Errorf("leaf %d is not in a tree of size %d", index, size)
	}
	hr, _ := hashReader(ctx, kv, size, root)
	p, err := tlog.ProveRecord(int64(size), int64(index), hr)
	if err != nil {
		return nil, err
	}
	return hashList(p), nil
}

// proveConsistency returns the RFC 6962 consistency proof from the tree of
// size from to the tree of size to and root: empty when from is 0 or to.
func proveConsistency(ctx context.Context, kv kvStore, from, to uint64, root []byte) ([][]byte, error) {
	if from > to || to > maxIndex {
		return nil, fmt.Errorf("no consistency proof from size %d to %d", from, to)
	}
	if from == 0 || from == to {
		return [][]byte{}, nil
	}
	hr, _ := hashReader(ctx, kv, to, root)
	p, err := tlog.ProveTree(int64(to), int64(from), hr)
	if err != nil {
		return nil, err
	}
	return hashList(p), nil
}

func hashList[T ~[]tlog.Hash](p T) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

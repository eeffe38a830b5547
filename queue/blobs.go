package queue

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
)

// Blobs seals mail attachments and large bodies into an object store
// (ATTACHMENTS) under "<tenant>/<name>"; a payload refers to one as
// "attachments/<tenant>/<name>".
type Blobs struct {
	objects *Objects
	sealer  Sealer
}

// NewBlobs returns the blob store on objects, sealing with s.
func NewBlobs(objects *Objects, s Sealer) *Blobs { return &Blobs{objects: objects, sealer: s} }

// blobNamePattern is a blob's name: base64url (unpadded) SHA-256.
var blobNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// GetBlob opens a tenant's stored attachment or body. An unknown name, a
// name of another tenant and a malformed name are all ErrNotFound.
func (b *Blobs) GetBlob(ctx context.Context, tenant, name string) ([]byte, error) {
	if !blobNamePattern.MatchString(name) {
		return nil, fmt.Errorf("%w: no such attachment", ErrNotFound)
	}
	obj := tenant + "/" + name
	sealed, err := b.objects.Get(ctx, obj)
	if err != nil {
		return nil, err
	}
	return b.sealer.Open(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeAttachment, ObjectID: obj}, sealed)
}

// PutBlob seals and stores a tenant's blob and returns its ref. A blob too
// large to seal is ingress.ErrTooLarge; a failing KMS or store is
// temporary (the sender retries: mail must not bounce).
func (b *Blobs) PutBlob(ctx context.Context, tenant, name string, data []byte) (string, error) {
	obj := tenant + "/" + name
	sealed, err := b.sealer.Seal(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeAttachment, ObjectID: obj}, data)
	switch {
	case errors.Is(err, kms.ErrTooLarge):
		return "", fmt.Errorf("%w: %w", ingress.ErrTooLarge, err)
	case err != nil:
		return "", ingress.Temporary(err)
	}
	if err := b.objects.Put(ctx, obj, sealed); err != nil {
		return "", ingress.Temporary(err)
	}
	return "attachments/" + obj, nil
}

// Idempotency keeps records of one use each in a KV bucket (with the
// bucket's time to live): Idempotency-Key uses of the ingest API, and
// mail already accepted (SMTP dedup). Reserve is a compare-and-set create.
type Idempotency struct{ kv *KV }

// NewIdempotency returns the store on kv.
func NewIdempotency(kv *KV) *Idempotency { return &Idempotency{kv: kv} }

// Reserve stores rec under key unless the key exists, in which case it
// returns the stored record.
func (s *Idempotency) Reserve(ctx context.Context, key string, rec []byte) ([]byte, error) {
	for range 3 {
		_, err := s.kv.Create(ctx, key, rec)
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		existing, _, err := s.kv.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // expired meanwhile
		}
		return existing, err
	}
	return nil, errors.New("queue: idempotency record keeps changing")
}

// Complete replaces key's record.
func (s *Idempotency) Complete(ctx context.Context, key string, rec []byte) error {
	_, err := s.kv.Put(ctx, key, rec)
	return err
}

// Release forgets key.
func (s *Idempotency) Release(ctx context.Context, key string) error {
	return s.kv.Delete(ctx, key)
}

// Claim records id under key unless another id is recorded there, which
// it returns (smtpin.Dedup).
func (s *Idempotency) Claim(ctx context.Context, key, id string) (string, error) {
	existing, err := s.Reserve(ctx, key, []byte(id))
	return string(existing), err
}

package keyring

import (
	"time"

	"github.com/sealpost/sealpost/signer"
)

// ParseHistory returns the public keys of a stored key-state document (the
// KEYRING bucket's StateKey), every key ever created with its status at
// now, as GET /v1/keys serves them. It needs no KMS: the public keys are
// stored in the clear. Tools that verify a data dir or a backup offline use
// it instead of New, which may write.
func ParseHistory(doc []byte, now time.Time) (*signer.KeySet, error) {
	st, err := parseState(doc)
	if err != nil {
		return nil, err
	}
	return keySet(st, now, true), nil
}

// Package kms seals everything sealpost stores with envelope encryption.
//
// Every sealed object is encrypted with AES-256-GCM under a 256-bit data key.
// The data key is wrapped (encrypted) by a key-encryption key (KEK) that lives
// in a provider: [Local], a master key file in the data directory, or [AWS],
// a customer managed key in AWS KMS. The wrapped data key travels inside the
// sealed blob, so opening needs the provider and nothing else.
//
// # Encryption context
//
// Every Seal and Open takes a [Context]: the tenant, the purpose (what kind of
// object it is, see the Purpose constants) and the object id. None of them may
// be empty. The context is bound twice:
//
//   - The full context (tenant, purpose, object id) is part of the GCM
//     additional data of the object, together with the sealed header. A blob
//     sealed for one tenant or object does not open for another.
//   - The part of the context that is constant for a cached data key (tenant
//     and purpose, plus a format marker) is the KMS encryption context of the
//     GenerateDataKey and Decrypt calls, so a data key generated for one
//     tenant and purpose is never unwrapped for another, and the provider's
//     audit log (CloudTrail for AWS) shows which tenant a key was used for.
//
// The KMS encryption context is
//
//	{"sealpost:format": "sps1", "sealpost:tenant": <tenant>, "sealpost:purpose": <purpose>}
//
// The object id cannot be part of it because one data key seals many
// objects.
//
// # Tenant keys
//
// With [Config].TenantKeys set, each tenant has a key of its own between the
// KEK and its data keys, sealed under the KEK and kept in a
// [TenantKeyStore]. [Envelope.DestroyTenant] erases it, which makes every
// object sealed for the tenant unopenable wherever a copy lies
// (crypto-shredding). The layout is in tenant.go.
//
// # Data-key cache
//
// Calling the KMS per object would make KMS traffic proportional to mail
// volume. Instead one data key, cached per (tenant, purpose), seals many
// objects until it is older than Config.MaxAge (default 5 minutes) or has
// sealed Config.MaxUses objects (default 100,000); then the next Seal
// generates a fresh one. Opening caches unwrapped data keys as well, in a
// bounded LRU keyed by a hash of the provider, the wrapped key and the KMS
// context, bounded by the same age and by Config.MaxOpenKeys entries. Under
// load the KMS call rate is therefore bounded by the number of active
// (tenant, purpose) pairs divided by MaxAge, not by the number of messages.
//
// # Sealed format, version 1
//
// All integers are big endian.
//
//	offset  size  field
//	0       4     magic "SPS1"
//	4       1     format version, 0x01
//	5       1     provider id length n, 1..32
//	6       n     provider id, ASCII: "local" or "aws"
//	6+n     2     wrapped-key length m, 1..8192
//	8+n     m     wrapped data key, provider specific (see below)
//	8+n+m   12    GCM nonce, random
//	20+n+m  16..  AES-256-GCM ciphertext followed by the 16-byte tag
//
// The GCM additional data is the header (bytes 0 to 8+n+m, everything before
// the nonce) followed by the context, each field as a 2-byte length and its
// UTF-8 bytes, in the order tenant, purpose, object id. Flipping any bit of a
// sealed blob or changing any context field makes Open fail with [ErrOpen].
//
// The local provider's wrapped key is
//
//	0  1   wrap format, 0x01
//	1  4   master key version
//	5  12  nonce
//	17 48  AES-256-GCM(master key, data key) and tag
//
// with the KMS context as additional data. The AWS provider's wrapped key is
// the CiphertextBlob that AWS KMS returned; it names the KMS key and its key
// material version itself, which is why AWS key rotation is transparent.
//
// # Errors
//
// [ErrUnavailable] means the provider could not be reached or refused the
// call for a reason that may pass (network, throttling, credentials, a
// disabled key): callers treat it as temporary and retry later. [ErrOpen]
// means the blob can never be opened with this context and this KEK: it was
// tampered with, belongs to another tenant or object, or was wrapped by
// another key. Open never returns partial plaintext.
package kms

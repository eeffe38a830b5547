// Offline verification of a receipt envelope, step for step as Go's
// signer.Verify.

import { createHash, timingSafeEqual, verify as edVerify } from 'node:crypto';
import { canonicalize, JsonNumber, parseJSON, toPlain } from './jcs.js';
import { JSONError, shorten, VerifyError } from './errors.js';
import { b64url, parseTime, unb64url } from './keys.js';

/** MAX_ENVELOPE_SIZE is the largest envelope, in bytes, that verifyReceipt accepts (64 MiB). */
export const MAX_ENVELOPE_SIZE = 64 << 20;

const RECEIPT_STRINGS = ['id', 'kid', 'tenant', 'route', 'channel', 'received_at', 'signed_at', 'payload_sha256', 'raw_sha256'];
const RECEIPT_MEMBERS = new Set([...RECEIPT_STRINGS, 'v', 'source', 'raw_size']);
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof JsonNumber);
}

/** toBytes returns the UTF-8 bytes of a string, or the bytes as they are. */
export function toBytes(input) {
  if (typeof input === 'string') return Buffer.from(input, 'utf8');
  if (input instanceof Uint8Array) return input;
  throw new TypeError('expected a string, a Buffer or a Uint8Array');
}

/** int64 reads an integer member (no fraction, no exponent, in int64), or returns null. */
function int64(v) {
  if (!(v instanceof JsonNumber) || !/^-?(0|[1-9][0-9]*)$/.test(v.text)) return null;
  const n = BigInt(v.text);
  return n < INT64_MIN || n > INT64_MAX ? null : n;
}

function malformed(step, detail) {
  return new VerifyError(step, 'malformed', detail);
}

function checkReceipt(r) {
  if (!isObject(r)) throw malformed('receipt', 'receipt is not a json object');
  for (const name of Object.keys(r)) {
    if (!RECEIPT_MEMBERS.has(name)) throw malformed('receipt', `unknown receipt member ${JSON.stringify(shorten(name))}`);
  }
  for (const name of RECEIPT_MEMBERS) {
    if (!Object.hasOwn(r, name)) throw malformed('receipt', `no "${name}" member`);
  }
  for (const name of RECEIPT_STRINGS) {
    if (typeof r[name] !== 'string') throw malformed('receipt', `"${name}" is not a string`);
  }
  const v = int64(r.v);
  if (v === null) throw malformed('receipt', '"v" is not an integer');
  if (int64(r.raw_size) === null) throw malformed('receipt', '"raw_size" is not an integer');
  if (v !== 1n) throw malformed('receipt', `receipt version ${v} is not 1`);
  if (parseTime(r.received_at) === null) throw malformed('receipt', 'received_at is not in the form 2006-01-02T15:04:05.000000Z');
  const signedAt = parseTime(r.signed_at);
  if (signedAt === null) throw malformed('receipt', 'signed_at is not in the form 2006-01-02T15:04:05.000000Z');
  return signedAt;
}

function checkSignature(s) {
  if (!isObject(s)) throw malformed('signature', 'signature is not a json object');
  for (const name of ['alg', 'kid', 'sig']) {
    if (!Object.hasOwn(s, name)) throw malformed('signature', `signature has no "${name}" member`);
    if (typeof s[name] !== 'string') throw malformed('signature', `signature "${name}" is not a string`);
  }
  if (Object.keys(s).length !== 3) throw malformed('signature', 'signature has unknown members');
  if (s.alg !== 'Ed25519') throw malformed('signature', `signature alg ${JSON.stringify(shorten(s.alg))} is not "Ed25519"`);
  const sig = unb64url(s.sig);
  if (!sig || sig.length !== 64) throw malformed('signature', 'sig is not 64 bytes of base64url without padding');
  return sig;
}

/** formatNs writes BigInt nanoseconds as an ISO time for error messages. */
function formatNs(ns) {
  const ms = Number(ns / 1_000_000n);
  return Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? new Date(ms).toISOString() : String(ns);
}

/** payloadDigest is base64url(SHA-256(JCS(payload))), the value of payload_sha256. */
export function payloadDigest(payload) {
  return b64url(createHash('sha256').update(canonicalize(payload)).digest());
}

/**
 * verifyReceipt checks a receipt envelope (bytes or a string) against a
 * KeySet, in the order of Go's signer.Verify: the envelope's form, the
 * receipt's members and times, the signature member, the kid in both, the
 * key in the set, signed_at in [nbf, signs_until), no revocation at or
 * before signed_at, Ed25519 over JCS(receipt), and payload_sha256 when the
 * payload is present.
 *
 * Returns { receipt, payload, payloadPresent, keyId }, with numbers as
 * doubles; throws VerifyError.
 */
export function verifyReceipt(envelope, keys) {
  const bytes = toBytes(envelope);
  if (bytes.length > MAX_ENVELOPE_SIZE) {
    throw malformed('envelope', `document too large: ${bytes.length} bytes, limit ${MAX_ENVELOPE_SIZE}`);
  }
  let top;
  try {
    top = parseJSON(bytes, { rawNumbers: true });
  } catch (e) {
    if (e instanceof JSONError) throw new VerifyError('envelope', 'malformed', e.message, e.code === 'lossy_number' ? 'lossy_number' : undefined);
    throw e;
  }
  if (!isObject(top)) throw malformed('envelope', 'envelope is not a json object');
  if (!Object.hasOwn(top, 'receipt')) throw malformed('envelope', 'no "receipt" member');
  if (!Object.hasOwn(top, 'signature')) throw malformed('envelope', 'no "signature" member');
  for (const name of Object.keys(top)) {
    if (!['receipt', 'signature', 'payload'].includes(name)) throw malformed('envelope', `unknown member ${JSON.stringify(shorten(name))}`);
  }
  const r = top.receipt;
  const signedAt = checkReceipt(r);
  const sig = checkSignature(top.signature);
  if (r.kid !== top.signature.kid) throw new VerifyError('key', 'key_mismatch');
  const key = keys?.lookup(r.kid);
  if (!key) throw new VerifyError('key', 'unknown_key', `kid ${JSON.stringify(shorten(r.kid))}`);
  if (key.notBefore !== null && signedAt < key.notBefore) {
    throw new VerifyError('window', 'outside_window', `signed_at ${r.signed_at} is before the key's window opens at ${formatNs(key.notBefore)}`);
  }
  if (key.signsUntil !== null && signedAt >= key.signsUntil) {
    throw new VerifyError('window', 'outside_window', `signed_at ${r.signed_at} is not before the key's window closed at ${formatNs(key.signsUntil)}`);
  }
  if (key.revokedAt !== null && signedAt >= key.revokedAt) {
    throw new VerifyError('revocation', 'revoked', `key revoked at ${formatNs(key.revokedAt)}, receipt signed at ${r.signed_at}`);
  }
  if (key.revokedAt === null && key.status === 'revoked') {
    throw new VerifyError('revocation', 'revoked', 'key is revoked and its revocation time is unknown');
  }
  const signed = Buffer.from(canonicalize(r), 'utf8');
  if (!key.publicKey || !edVerify(null, signed, key.publicKey, sig)) throw new VerifyError('signature', 'bad_signature');
  const payloadPresent = Object.hasOwn(top, 'payload');
  if (payloadPresent) {
    // Both digests are public; the constant-time compare is a habit that
    // costs nothing.
    const got = Buffer.from(payloadDigest(top.payload));
    const want = Buffer.from(r.payload_sha256);
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new VerifyError('payload', 'payload_digest');
  }
  return {
    receipt: toPlain(r),
    payload: payloadPresent ? toPlain(top.payload) : undefined,
    payloadPresent,
    keyId: key.kid,
  };
}

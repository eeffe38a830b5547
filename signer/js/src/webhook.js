// Webhook verification: the Standard Webhooks headers as sealpost sends
// them, checked as Go's signer.VerifyWebhook checks them.

import { createHmac, timingSafeEqual, verify as edVerify } from 'node:crypto';
import { VerifyError } from './errors.js';
import { unb64std } from './keys.js';
import { MAX_ENVELOPE_SIZE, toBytes, verifyReceipt } from './receipt.js';

/** DEFAULT_TOLERANCE_SECONDS is how far webhook-timestamp may lie from the clock, either way. */
export const DEFAULT_TOLERANCE_SECONDS = 300;
/** MAX_SIGNATURE_HEADER is the longest webhook-signature header, in bytes. */
export const MAX_SIGNATURE_HEADER = 8 << 10;
/** MAX_ID_LENGTH is the longest webhook-id, in bytes. */
export const MAX_ID_LENGTH = 256;

/**
 * decodeSecret decodes a whsec_ secret to its key bytes. Throws a TypeError
 * that never contains the secret.
 */
export function decodeSecret(secret, index = 0) {
  const enc = typeof secret === 'string' && secret.startsWith('whsec_') ? secret.slice(6) : null;
  const key = enc !== null && /^[A-Za-z0-9+/]*={0,2}$/.test(enc) && enc.length % 4 === 0 ? Buffer.from(enc, 'base64') : null;
  if (!key || key.length < 16 || key.length > 64) {
    throw new TypeError(`secret ${index} is not whsec_ and the base64 of 16 to 64 bytes`);
  }
  return key;
}

/** header reads one header from a fetch Headers object, node's req.headers or a plain object. */
function header(headers, name) {
  if (headers && typeof headers.get === 'function') return headers.get(name) ?? '';
  let v = headers?.[name];
  if (v === undefined && headers) {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
    if (key !== undefined) v = headers[key];
  }
  if (Array.isArray(v)) return v.join(', ');
  return typeof v === 'string' ? v : '';
}

/** entries returns the decoded signatures of one version in a webhook-signature header. */
function entries(value, version, size) {
  const out = [];
  for (const entry of value.split(/[ \t\n\v\f\r]+/)) {
    const comma = entry.indexOf(',');
    if (comma < 0 || entry.slice(0, comma) !== version) continue;
    const sig = unb64std(entry.slice(comma + 1));
    if (sig && sig.length === size) out.push(sig);
  }
  return out;
}

/**
 * signsWebhooksAt reports whether a key may have signed a webhook at ns:
 * from nbf until exp (the current key, and the previous one during its
 * grace period), never from its revocation.
 */
function signsWebhooksAt(k, ns) {
  if (k.notBefore !== null && ns < k.notBefore) return false;
  if (k.expires !== null && ns >= k.expires) return false;
  if (k.revokedAt !== null && ns >= k.revokedAt) return false;
  return !(k.revokedAt === null && k.status === 'revoked');
}

/**
 * verifyWebhook checks a webhook request, in this order:
 *  1. webhook-id is 1 to 256 bytes, webhook-timestamp 1 to 12 digits,
 *     webhook-signature present and at most 8 KiB, the body at most 64 MiB;
 *  2. webhook-timestamp lies within toleranceSeconds of now;
 *  3. with keys: a v1a entry is an Ed25519 signature over
 *     "{id}.{timestamp}.{body}" by a key that could sign at the timestamp;
 *  4. with secrets: a v1 entry is the HMAC-SHA256 of the same content with
 *     one of the whsec_ secrets (compared in constant time);
 *  5. with keys: the body is a receipt envelope that verifyReceipt accepts,
 *     and its receipt id is webhook-id.
 *
 * options: { headers, body (the raw bytes as received), keys (a KeySet),
 * secrets (whsec_ strings), toleranceSeconds (default 300), now (a Date or
 * milliseconds; default the clock) }.
 * Returns { id, timestamp, receipt } (receipt: verifyReceipt's result, or
 * null without keys); throws VerifyError, or TypeError for bad options.
 */
export function verifyWebhook({ headers, body, keys = null, secrets = [], toleranceSeconds = DEFAULT_TOLERANCE_SECONDS, now = Date.now() }) {
  if (!keys && secrets.length === 0) throw new TypeError('verify webhook: no keys and no secrets to verify with');
  const hmacKeys = secrets.map((s, i) => decodeSecret(s, i));
  try {
    return check(headers, body, keys, hmacKeys, toleranceSeconds, now);
  } finally {
    for (const k of hmacKeys) k.fill(0);
  }
}

function check(headers, body, keys, hmacKeys, toleranceSeconds, now) {
  const bytes = toBytes(body);
  const id = header(headers, 'webhook-id');
  const ts = header(headers, 'webhook-timestamp');
  const sigs = header(headers, 'webhook-signature');
  const bad = (detail) => new VerifyError('headers', 'malformed', detail);
  if (id === '') throw bad('no webhook-id');
  if (Buffer.byteLength(id) > MAX_ID_LENGTH) throw bad(`webhook-id is longer than ${MAX_ID_LENGTH} bytes`);
  if (!/^[0-9]{1,12}$/.test(ts)) throw bad('webhook-timestamp is not 1 to 12 digits');
  if (sigs === '') throw bad('no webhook-signature');
  if (Buffer.byteLength(sigs) > MAX_SIGNATURE_HEADER) throw bad(`webhook-signature is longer than ${MAX_SIGNATURE_HEADER} bytes`);
  if (bytes.length > MAX_ENVELOPE_SIZE) throw bad(`body is larger than ${MAX_ENVELOPE_SIZE} bytes`);

  const seconds = Number(ts);
  const nowMs = now instanceof Date ? now.getTime() : Number(now);
  const skewMs = nowMs - seconds * 1000;
  if (!(Math.abs(skewMs) <= toleranceSeconds * 1000)) {
    throw new VerifyError('timestamp', 'outside_tolerance', `webhook-timestamp ${ts} is ${Math.round(skewMs / 1000)}s from the clock, tolerance ${toleranceSeconds}s`);
  }
  const input = Buffer.concat([Buffer.from(`${id}.${ts}.`, 'utf8'), bytes]);
  if (keys) {
    const at = BigInt(ts) * 1_000_000_000n;
    const candidates = keys.keys.filter((k) => k.publicKey && signsWebhooksAt(k, at));
    const ok = entries(sigs, 'v1a', 64).some((sig) => candidates.some((k) => edVerify(null, input, k.publicKey, sig)));
    if (!ok) throw new VerifyError('v1a', 'bad_signature', 'no valid v1a signature by a published key');
  }
  if (hmacKeys.length > 0) {
    const got = entries(sigs, 'v1', 32);
    let ok = false;
    for (const key of hmacKeys) {
      const want = createHmac('sha256', key).update(input).digest();
      for (const sig of got) ok = timingSafeEqual(sig, want) || ok;
    }
    if (!ok) throw new VerifyError('v1', 'bad_signature', 'no valid v1 signature with the endpoint secrets');
  }
  const result = { id, timestamp: seconds, receipt: null };
  if (!keys) return result;
  result.receipt = verifyReceipt(bytes, keys);
  if (result.receipt.receipt.id !== id) throw new VerifyError('headers', 'id_mismatch', 'webhook-id is not the receipt id');
  return result;
}

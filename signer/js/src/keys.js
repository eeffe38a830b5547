// Public keys: the JWKS (/.well-known/jwks.json) and the key history
// (/v1/keys), parsed with the rules of Go's signer.ParseKeySet. Times are
// BigInt nanoseconds since the Unix epoch, so that windows compare exactly
// as in Go (a JWK date may carry nanoseconds).

import { createHash, createPublicKey } from 'node:crypto';
import { JsonNumber, parseJSON } from './jcs.js';
import { JSONError, KeySetError, shorten } from './errors.js';

/** MAX_KEY_SET_SIZE is the largest JWKS or key-history document, in bytes (1 MiB). */
export const MAX_KEY_SET_SIZE = 1 << 20;

export const STATUSES = ['next', 'active', 'grace', 'expired', 'revoked'];

/** b64url encodes bytes as base64url without padding. */
export function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * unb64url decodes base64url without padding strictly: one value has one
 * accepted text (no padding, no line breaks, no stray bits). Returns null
 * when s is not such a text.
 */
export function unb64url(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return null;
  const b = Buffer.from(s, 'base64url');
  return b.toString('base64url') === s ? b : null;
}

/** unb64std decodes padded standard base64 strictly, or returns null. */
export function unb64std(s) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  const b = Buffer.from(s, 'base64');
  return b.toString('base64') === s ? b : null;
}

/** thumbprint is the RFC 7638 thumbprint of an Ed25519 public key: its kid. */
export function thumbprint(pub) {
  const members = `{"crv":"Ed25519","kty":"OKP","x":"${b64url(pub)}"}`;
  return b64url(createHash('sha256').update(members).digest());
}

const MAX_NUMERIC_DATE = 253402300799n; // 9999-12-31T23:59:59Z

/** parseNumericDate reads a JWK date (seconds, up to nine fractional digits) as nanoseconds. */
function parseNumericDate(v, name) {
  const m = v instanceof JsonNumber ? /^([0-9]{1,12})(?:\.([0-9]{1,9}))?$/.exec(v.text) : null;
  if (!m) throw new Error(`"${name}" is not a plain non-negative number of seconds`);
  const sec = BigInt(m[1]);
  if (sec > MAX_NUMERIC_DATE) throw new Error(`"${name}" is out of range`);
  return sec * 1_000_000_000n + BigInt((m[2] || '').padEnd(9, '0'));
}

const DATES = { iat: 'issuedAt', nbf: 'notBefore', exp: 'expires', signs_until: 'signsUntil', revoked_at: 'revokedAt' };

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof JsonNumber);
}

// importKey returns x as a node KeyObject, or null when node refuses it:
// such a key is kept, as Go keeps it, and verifies nothing.
function importKey(x) {
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(x) }, format: 'jwk' });
  } catch {
    return null;
  }
}

function parseJWK(m) {
  if (!isObject(m)) throw new Error('not a json object');
  if (Object.hasOwn(m, 'd')) throw new Error('holds private key material ("d")');
  const str = (name, required) => {
    if (!Object.hasOwn(m, name)) {
      if (required) throw new Error(`no "${name}" member`);
      return undefined;
    }
    if (typeof m[name] !== 'string') throw new Error(`"${name}" is not a string`);
    return m[name];
  };
  if (str('kty', true) !== 'OKP') throw new Error(`kty ${JSON.stringify(shorten(m.kty))} is not "OKP"`);
  if (str('crv', true) !== 'Ed25519') throw new Error(`crv ${JSON.stringify(shorten(m.crv))} is not "Ed25519"`);
  const x = unb64url(str('x', true));
  if (!x || x.length !== 32) throw new Error('x is not 32 bytes of base64url without padding');
  const kid = str('kid', true);
  if (kid !== thumbprint(x)) throw new Error(`kid ${JSON.stringify(shorten(kid))} is not the RFC 7638 thumbprint of x`);
  const use = str('use', false);
  if (use !== undefined && use !== '' && use !== 'sig') throw new Error(`use ${JSON.stringify(shorten(use))} is not "sig"`);
  const alg = str('alg', false);
  if (alg !== undefined && alg !== 'Ed25519' && alg !== 'EdDSA') throw new Error(`alg ${JSON.stringify(shorten(alg))} is not "Ed25519"`);
  const status = str('status', false) ?? '';
  if (status !== '' && !STATUSES.includes(status)) throw new Error(`status ${JSON.stringify(shorten(status))} is unknown`);
  const key = {
    kid,
    x: b64url(x),
    publicKey: importKey(x),
    status,
    issuedAt: null,
    notBefore: null,
    expires: null,
    signsUntil: null,
    revokedAt: null,
  };
  for (const [name, field] of Object.entries(DATES)) {
    if (Object.hasOwn(m, name)) key[field] = parseNumericDate(m[name], name);
  }
  if (key.signsUntil !== null && key.notBefore !== null && key.signsUntil < key.notBefore) {
    throw new Error('signs_until is before nbf');
  }
  return Object.freeze(key);
}

/**
 * KeySet is a parsed JWKS or key history. Each key has kid, x, publicKey (a
 * node KeyObject), status ("" in a JWKS), and issuedAt, notBefore, expires,
 * signsUntil, revokedAt as BigInt nanoseconds or null when absent.
 */
export class KeySet {
  constructor(keys) {
    this.keys = Object.freeze([...keys]);
  }

  /** lookup returns the key with this kid, or undefined. */
  lookup(kid) {
    return this.keys.find((k) => k.kid === kid);
  }
}

/**
 * parseKeySet parses a JWKS or key-history document (bytes or a string)
 * strictly, as Go's signer.ParseKeySet: Ed25519 OKP keys whose kid is
 * their thumbprint, no private keys, no duplicate members or kids.
 * Throws KeySetError naming the offending key.
 */
export function parseKeySet(doc) {
  const size = typeof doc === 'string' ? Buffer.byteLength(doc) : doc.length;
  if (size > MAX_KEY_SET_SIZE) throw new KeySetError(`document too large: ${size} bytes, limit ${MAX_KEY_SET_SIZE}`);
  let top;
  try {
    top = parseJSON(doc, { rawNumbers: true });
  } catch (e) {
    if (e instanceof JSONError) throw new KeySetError(e.message);
    throw e;
  }
  if (!isObject(top)) throw new KeySetError('not a json object');
  if (!Object.hasOwn(top, 'keys')) throw new KeySetError('no "keys" member');
  if (!Array.isArray(top.keys)) throw new KeySetError('"keys" is not an array');
  const seen = new Map();
  const keys = top.keys.map((raw, i) => {
    let k;
    try {
      k = parseJWK(raw);
    } catch (e) {
      throw new KeySetError(`key ${i}: ${e.message}`);
    }
    if (seen.has(k.kid)) throw new KeySetError(`key ${i}: kid ${k.kid} repeats key ${seen.get(k.kid)}`);
    seen.set(k.kid, i);
    return k;
  });
  return new KeySet(keys);
}

const TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z$/;

function daysInMonth(y, m) {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(m) ? 30 : 31;
}

// daysFromCivil counts days from 1970-01-01 to a proleptic Gregorian date
// (H. Hinnant's algorithm), valid for every year the layout can hold.
function daysFromCivil(y, m, d) {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/**
 * parseTime reads a receipt time, "2006-01-02T15:04:05.000000Z" exactly
 * (UTC, six fractional digits), as BigInt nanoseconds, or returns null.
 */
export function parseTime(s) {
  const m = typeof s === 'string' ? TIME.exec(s) : null;
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number);
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 59) return null;
  const seconds = BigInt(daysFromCivil(y, mo, d)) * 86400n + BigInt(h * 3600 + mi * 60 + sec);
  return seconds * 1_000_000_000n + BigInt(m[7]) * 1000n;
}

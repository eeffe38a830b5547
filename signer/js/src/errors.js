// Errors of the kit. Every verification failure is a VerifyError naming the
// step that failed and an error code; the codes and steps are those of the
// shared test vectors in signer/testdata/vectors and of Go's signer package.

/**
 * A verification failure.
 *
 * step: envelope, receipt, signature, key, window, revocation, payload
 * (the receipt envelope), or headers, timestamp, v1a, v1 (the webhook).
 * code: malformed, unknown_key, key_mismatch, outside_window, revoked,
 * bad_signature, payload_digest, outside_tolerance, id_mismatch.
 * cause: "lossy_number" when a number that does not survive an IEEE-754
 * double is the reason, else undefined.
 */
export class VerifyError extends Error {
  constructor(step, code, detail, cause) {
    const what = ['headers', 'timestamp', 'v1a', 'v1'].includes(step) ? 'verify webhook' : 'verify receipt';
    super(`${what}: ${step}: ${code}${detail ? `: ${detail}` : ''}`);
    this.name = 'VerifyError';
    this.step = step;
    this.code = code;
    this.cause = cause;
  }
}

/** A document that is not JSON as JCS (RFC 8785) accepts it. code: malformed or lossy_number. */
export class JSONError extends Error {
  constructor(code, detail) {
    super(`${code === 'lossy_number' ? 'number does not survive the round trip through an IEEE-754 double' : 'invalid JSON'}: ${detail}`);
    this.name = 'JSONError';
    this.code = code;
  }
}

/** A JWKS or key-history document that is refused. */
export class KeySetError extends Error {
  constructor(detail) {
    super(`invalid key set: ${detail}`);
    this.name = 'KeySetError';
  }
}

/** shorten keeps untrusted text short before it goes into an error message. */
export function shorten(s) {
  s = String(s);
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

// @sealpost/verify: verify sealpost receipts and webhooks in Node.js, with
// nothing but node's crypto. See docs/verify.md in the sealpost repository.

export { VerifyError, JSONError, KeySetError } from './src/errors.js';
export { parseJSON, canonicalize, canonicalizeText, formatNumber, JsonNumber, MAX_DEPTH } from './src/jcs.js';
export { parseKeySet, KeySet, thumbprint, parseTime, MAX_KEY_SET_SIZE } from './src/keys.js';
export { verifyReceipt, payloadDigest, MAX_ENVELOPE_SIZE } from './src/receipt.js';
export { verifyWebhook, decodeSecret, DEFAULT_TOLERANCE_SECONDS, MAX_SIGNATURE_HEADER, MAX_ID_LENGTH } from './src/webhook.js';
export { JwksClient, WebhookVerifier } from './src/jwks.js';

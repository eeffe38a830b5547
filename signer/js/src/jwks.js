// Fetching and caching sealpost's keys, and a webhook verifier that
// refreshes them when a receipt names a key it does not know.

import { KeySetError, VerifyError } from './errors.js';
import { MAX_KEY_SET_SIZE, parseKeySet } from './keys.js';
import { verifyReceipt } from './receipt.js';
import { DEFAULT_TOLERANCE_SECONDS, verifyWebhook } from './webhook.js';

const MAX_AGE_CAP_MS = 3600_000;
const DEFAULT_MAX_AGE_MS = 300_000;

/** readLimited reads a fetch response body, refusing more than max bytes. */
async function readLimited(res, max) {
  const declared = Number(res.headers.get('content-length'));
  if (declared > max) {
    await res.body?.cancel();
    throw new KeySetError(`response of ${declared} bytes exceeds the limit of ${max}`);
  }
  const chunks = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > max) {
        throw new KeySetError(`response exceeds the limit of ${max} bytes`);
      }
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks, size);
}

function maxAgeMs(cacheControl) {
  if (!cacheControl) return DEFAULT_MAX_AGE_MS;
  if (/(^|[,\s])(no-cache|no-store)\b/i.test(cacheControl)) return 0;
  const m = /(?:^|[,\s])max-age=(\d+)/i.exec(cacheControl);
  return m ? Math.min(Number(m[1]) * 1000, MAX_AGE_CAP_MS) : DEFAULT_MAX_AGE_MS;
}

/**
 * JwksClient fetches a JWKS (or the key history, /v1/keys) with the
 * platform's fetch, caches it as Cache-Control says (at most an hour,
 * revalidating with ETag), refetches at most once per minRefreshIntervalMs
 * when asked to refresh (a receipt names an unknown kid), refuses bodies
 * over maxBytes and redirects, and gives up after timeoutMs. When a refetch
 * fails, the keys fetched before stay in use.
 *
 * For a private CA, start node with NODE_EXTRA_CA_CERTS=ca.pem.
 */
export class JwksClient {
  constructor(url, { minRefreshIntervalMs = 60_000, maxBytes = MAX_KEY_SET_SIZE, timeoutMs = 10_000, allowHttp = false, fetch: fetchFn = globalThis.fetch, now = Date.now } = {}) {
    const u = new URL(url);
    if (u.protocol !== 'https:' && !(allowHttp && u.protocol === 'http:')) {
      throw new TypeError(`jwks url must be https, not ${u.protocol}`);
    }
    this.url = u.href;
    this.minRefreshIntervalMs = minRefreshIntervalMs;
    this.maxBytes = maxBytes;
    this.timeoutMs = timeoutMs;
    this.fetch = fetchFn;
    this.now = now;
    this.keys = null;
    this.etag = null;
    this.expiresAt = 0;
    this.fetchedAt = -Infinity;
    this.inflight = null;
    /** fetches counts the requests made, for monitoring and tests. */
    this.fetches = 0;
  }

  /** keySet returns the cached KeySet, fetching it when there is none or it expired. */
  async keySet() {
    if (this.keys && this.now() < this.expiresAt) return this.keys;
    return this.load();
  }

  /**
   * refresh refetches the keys unless they were fetched less than
   * minRefreshIntervalMs ago. Returns whether it fetched.
   */
  async refresh() {
    if (this.now() - this.fetchedAt < this.minRefreshIntervalMs) return false;
    await this.load();
    return true;
  }

  async load() {
    this.inflight ??= this.fetchKeys().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async fetchKeys() {
    this.fetchedAt = this.now();
    this.fetches++;
    try {
      const headers = { accept: 'application/jwk-set+json, application/json' };
      if (this.etag && this.keys) headers['if-none-match'] = this.etag;
      const res = await this.fetch(this.url, { headers, redirect: 'error', signal: AbortSignal.timeout(this.timeoutMs) });
      if (res.status === 304 && this.keys) {
        await res.body?.cancel();
      } else if (res.status === 200) {
        const keys = parseKeySet(await readLimited(res, this.maxBytes));
        this.keys = keys;
        this.etag = res.headers.get('etag');
      } else {
        await res.body?.cancel();
        throw new KeySetError(`GET ${this.url}: HTTP ${res.status}`);
      }
      this.expiresAt = this.now() + maxAgeMs(res.headers.get('cache-control'));
      return this.keys;
    } catch (e) {
      if (this.keys) return this.keys; // keep verifying with the keys fetched before
      throw e instanceof KeySetError ? e : new KeySetError(`GET ${this.url}: ${e.message}`);
    }
  }
}

/** shouldRefresh: a failure that newer keys could turn into a success. */
function shouldRefresh(e) {
  return e instanceof VerifyError && (e.code === 'unknown_key' || e.step === 'v1a');
}

async function withRefresh(client, verify) {
  const keys = await client.keySet();
  try {
    return verify(keys);
  } catch (e) {
    if (!shouldRefresh(e) || !(await client.refresh())) throw e;
    return verify(await client.keySet());
  }
}

/**
 * WebhookVerifier verifies webhooks against a JWKS URL (a JwksClient is made
 * for it) or a JwksClient, and optionally whsec_ secrets. When a receipt
 * names an unknown kid, or no v1a signature verifies, it refreshes the keys
 * once (at most once a minute) and tries again.
 */
export class WebhookVerifier {
  constructor({ jwks, secrets = [], toleranceSeconds = DEFAULT_TOLERANCE_SECONDS, clientOptions = {} }) {
    this.client = jwks instanceof JwksClient ? jwks : new JwksClient(jwks, clientOptions);
    this.secrets = [...secrets];
    this.toleranceSeconds = toleranceSeconds;
  }

  /** verify checks one request; see verifyWebhook. now defaults to the clock. */
  async verify(headers, body, { now = Date.now() } = {}) {
    return withRefresh(this.client, (keys) => verifyWebhook({ headers, body, keys, secrets: this.secrets, toleranceSeconds: this.toleranceSeconds, now }));
  }

  /** verifyReceipt checks a stored envelope with the same keys; see verifyReceipt. */
  async verifyReceipt(envelope) {
    return withRefresh(this.client, (keys) => verifyReceipt(envelope, keys));
  }
}

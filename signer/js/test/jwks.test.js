// JwksClient and WebhookVerifier against a JWKS server on the loopback
// interface: caching, refresh on an unknown kid, the bounded refresh rate,
// revalidation, the size limit, redirects and timeouts.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { JwksClient, KeySetError, VerifyError, WebhookVerifier } from '../index.js';

const vectors = JSON.parse(readFileSync(new URL('../../testdata/vectors/webhooks.json', import.meta.url), 'utf8'));
const sets = vectors.key_sets;
const grace = vectors.cases.find((c) => c.name === "during grace: the receipt's key left the receiver's key set");

let server;
let base;
let respond; // (req, res) => void, set by each test
const requests = [];

before(async () => {
  server = createServer((req, res) => {
    requests.push({ url: req.url, ifNoneMatch: req.headers['if-none-match'] });
    respond(req, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

function serve(doc, headers = {}) {
  return (req, res) => {
    res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=3600', ...headers });
    res.end(doc);
  };
}

// clock is a fake clock for the client's intervals and expiry.
function clock() {
  let t = 1_000_000;
  const now = () => t;
  now.advance = (ms) => {
    t += ms;
  };
  return now;
}

function client(opts = {}) {
  return new JwksClient(`${base}/.well-known/jwks.json`, { allowHttp: true, ...opts });
}

describe('JwksClient', () => {
  test('caches the key set for its max-age', async () => {
    respond = serve(sets.jwks_2026q4);
    const now = clock();
    const c = client({ now });
    const first = await c.keySet();
    assert.equal(first.keys.length, 2);
    assert.equal(await c.keySet(), first);
    now.advance(3599_000);
    await c.keySet();
    assert.equal(c.fetches, 1);
    now.advance(2000);
    await c.keySet();
    assert.equal(c.fetches, 2);
  });

  test('revalidates with the ETag and keeps the keys on 304', async () => {
    requests.length = 0;
    respond = (req, res) => {
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'no-cache' });
        res.end();
        return;
      }
      serve(sets.jwks_2026q4, { etag: '"v1"', 'cache-control': 'no-cache' })(req, res);
    };
    const c = client();
    const first = await c.keySet();
    assert.equal(await c.keySet(), first);
    assert.deepEqual(requests.map((r) => r.ifNoneMatch), [undefined, '"v1"']);
  });

  test('refuses a response over the size limit', async () => {
    const big = `{"keys":[],"pad":"${'a'.repeat(2 << 20)}"}`;
    respond = serve(big);
    await assert.rejects(client().keySet(), (e) => e instanceof KeySetError && /limit/.test(e.message));
    // Without a content-length, the body is cut off as it streams in.
    respond = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(big.slice(0, 1 << 20));
      res.end(big.slice(1 << 20));
    };
    await assert.rejects(client({ maxBytes: 4096 }).keySet(), (e) => e instanceof KeySetError && /limit of 4096/.test(e.message));
  });

  test('refuses redirects, errors and invalid key sets', async () => {
    respond = (req, res) => {
      res.writeHead(302, { location: `${base}/elsewhere` });
      res.end();
    };
    await assert.rejects(client().keySet(), KeySetError);
    respond = (req, res) => {
      res.writeHead(500);
      res.end('no');
    };
    await assert.rejects(client().keySet(), /HTTP 500/);
    respond = serve('{"keys":[{"kty":"OKP"}]}');
    await assert.rejects(client().keySet(), /key 0/);
  });

  test('keeps the keys it has when a refetch fails', async () => {
    respond = serve(sets.jwks_2026q4, { 'cache-control': 'no-cache' });
    const c = client();
    const first = await c.keySet();
    respond = (req, res) => {
      res.writeHead(503);
      res.end();
    };
    assert.equal(await c.keySet(), first);
  });

  test('gives up after the timeout', async () => {
    respond = () => {}; // never answers
    const t0 = Date.now();
    await assert.rejects(client({ timeoutMs: 200 }).keySet(), KeySetError);
    assert.ok(Date.now() - t0 < 5000);
  });

  test('wants https', () => {
    assert.throws(() => new JwksClient(`${base}/jwks.json`), TypeError);
  });
});

describe('WebhookVerifier', () => {
  test('refreshes once on an unknown kid, at most once a minute', async () => {
    // The receiver's cache holds only the new key; the receipt, a retry
    // after a rotation, was signed by the previous one.
    let doc = sets.jwks_b_only;
    respond = (req, res) => serve(doc)(req, res);
    const now = clock();
    const c = client({ now });
    const verifier = new WebhookVerifier({ jwks: c });
    const request = () => verifier.verify(new Headers(grace.headers), Buffer.from(grace.body), { now: grace.now * 1000 });

    await c.keySet();
    doc = sets.jwks_2027q1; // the server has both keys now
    now.advance(61_000);
    const got = await request();
    assert.equal(got.receipt.receipt.id, grace.headers['webhook-id']);
    assert.equal(c.fetches, 2);

    // Unknown kids do not make the verifier hammer the server.
    doc = sets.jwks_b_only;
    now.advance(61_000);
    c.expiresAt = 0;
    await c.keySet(); // the cache loses the key again
    for (let i = 0; i < 5; i++) {
      await assert.rejects(request(), (e) => e instanceof VerifyError && e.code === 'unknown_key');
    }
    assert.equal(c.fetches, 3);
    now.advance(61_000);
    await assert.rejects(request(), (e) => e instanceof VerifyError && e.code === 'unknown_key');
    assert.equal(c.fetches, 4);
  });

  test('a tampered body does not refetch within the refresh interval', async () => {
    respond = serve(sets.jwks_2027q1);
    const c = client({ now: clock() });
    const verifier = new WebhookVerifier({ jwks: c });
    const body = Buffer.from(grace.body.replace('"n":1', '"n":2'));
    await assert.rejects(verifier.verify(new Headers(grace.headers), body, { now: grace.now * 1000 }), (e) => e.step === 'v1a');
    assert.equal(c.fetches, 1); // a refresh is allowed only a minute after the first fetch
  });
});

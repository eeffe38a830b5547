// The forms a webhook's headers come in: fetch's Headers, node's
// req.headers (lower case) and plain objects with any case.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseKeySet, verifyWebhook } from '../index.js';

const vectors = JSON.parse(readFileSync(new URL('../../testdata/vectors/webhooks.json', import.meta.url), 'utf8'));
const c = vectors.cases.find((c) => c.name === 'valid v1a and v1');
const keys = parseKeySet(vectors.key_sets[c.key_set]);

test('header forms', () => {
  const h = c.headers;
  const capitalized = { 'Webhook-Id': h['webhook-id'], 'WEBHOOK-TIMESTAMP': h['webhook-timestamp'], 'Webhook-Signature': h['webhook-signature'] };
  for (const headers of [new Headers(h), { ...h }, capitalized]) {
    const got = verifyWebhook({ headers, body: c.body, keys, secrets: c.secrets, now: new Date(c.now * 1000) });
    assert.equal(got.id, h['webhook-id']);
  }
  assert.throws(() => verifyWebhook({ headers: {}, body: c.body, keys, now: c.now * 1000 }), { step: 'headers', code: 'malformed' });
});

test('options', () => {
  assert.throws(() => verifyWebhook({ headers: c.headers, body: c.body }), TypeError);
  for (const secret of ['abc', 'whsec_', 'whsec_AAAA', 'whsec_!!!!!!!!!!!!!!!!!!!!!!!!', `whsec_${'A'.repeat(100)}`]) {
    assert.throws(() => verifyWebhook({ headers: c.headers, body: c.body, secrets: [secret] }), (e) => e instanceof TypeError && !e.message.includes(secret.slice(6) || 'whsec_x'));
  }
});

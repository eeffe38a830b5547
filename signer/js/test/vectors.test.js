// The shared vectors of signer/testdata/vectors, which Go's signer package
// and the Python kit run too.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { canonicalizeText, formatNumber, JSONError, parseKeySet, VerifyError, verifyReceipt, verifyWebhook } from '../index.js';

const dir = new URL('../../testdata/vectors/', import.meta.url);
const load = (name) => JSON.parse(readFileSync(new URL(name, dir), 'utf8'));

function input(c, text, b64) {
  return c[b64] ? Buffer.from(c[b64], 'base64') : Buffer.from(c[text] ?? '', 'utf8');
}

function checkOutcome(want, run) {
  if (want.ok) {
    const got = run();
    const v = got.receipt && 'keyId' in got.receipt ? got.receipt : got;
    if (want.receipt_id) assert.equal(v.receipt.id, want.receipt_id);
    if (want.key_id) assert.equal(v.keyId, want.key_id);
    if (want.payload_present !== undefined) assert.equal(v.payloadPresent, want.payload_present);
    return;
  }
  assert.throws(run, (e) => {
    assert.ok(e instanceof VerifyError, `want a VerifyError, got ${e}`);
    assert.equal(`${e.code} at ${e.step}`, `${want.error} at ${want.step}`, e.message);
    assert.equal(e.cause, want.cause, e.message);
    return true;
  });
}

function keySets(file) {
  return Object.fromEntries(Object.entries(file.key_sets).map(([name, doc]) => [name, parseKeySet(doc)]));
}

describe('receipts', () => {
  const file = load('receipts.json');
  const sets = keySets(file);
  for (const c of file.cases) {
    test(c.name, () => checkOutcome(c.expect, () => verifyReceipt(input(c, 'envelope', 'envelope_base64'), sets[c.key_set])));
  }
});

describe('webhooks', () => {
  const file = load('webhooks.json');
  const sets = keySets(file);
  for (const c of file.cases) {
    test(c.name, () =>
      checkOutcome(c.expect, () => {
        const got = verifyWebhook({
          headers: new Headers(c.headers),
          body: Buffer.from(c.body, 'utf8'),
          keys: c.key_set ? sets[c.key_set] : null,
          secrets: c.secrets ?? [],
          toleranceSeconds: c.tolerance_seconds || undefined,
          now: c.now * 1000,
        });
        assert.equal(got.id, c.headers['webhook-id']);
        assert.equal(String(got.timestamp), c.headers['webhook-timestamp']);
        if (!c.key_set) assert.equal(got.receipt, null);
        return got;
      }),
    );
  }
});

describe('jcs', () => {
  const file = load('jcs.json');
  for (const c of file.cases) {
    test(c.name, () => {
      const run = () => canonicalizeText(input(c, 'input', 'input_base64'));
      if (c.expect.ok) {
        assert.equal(run(), c.expect.output);
      } else {
        assert.throws(run, (e) => e instanceof JSONError && e.code === c.expect.error);
      }
    });
  }
  test('numbers', () => {
    assert.ok(file.numbers.length >= 800);
    for (const [bits, text] of file.numbers) {
      const v = Buffer.from(bits, 'hex').readDoubleBE(0);
      assert.equal(formatNumber(v), text, bits);
      const back = Buffer.alloc(8);
      back.writeDoubleBE(Number(text));
      assert.ok(back.toString('hex') === bits || (Number(text) === 0 && v === 0), `${text} parses to ${back.toString('hex')}, want ${bits}`);
      assert.equal(canonicalizeText(text), text);
    }
  });
});

describe('key sets', () => {
  const file = load('keysets.json');
  for (const c of file.cases) {
    test(c.name, () => {
      if (c.expect.ok) {
        assert.deepEqual(parseKeySet(c.document).keys.map((k) => k.kid), c.expect.kids ?? []);
      } else {
        assert.throws(() => parseKeySet(c.document), { name: 'KeySetError' });
      }
    });
  }
});

// The command-line verifier, run as a user would run it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../bin/sealpost-verify.js', import.meta.url));
const vectors = (name) => JSON.parse(readFileSync(new URL(`../../testdata/vectors/${name}`, import.meta.url), 'utf8'));
const dir = mkdtempSync(join(tmpdir(), 'sealpost-verify-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name, content) {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function run(...args) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('receipt', () => {
  const { key_sets: sets, cases } = vectors('receipts.json');
  const jwks = file('jwks.json', sets.jwks_2026q4);
  const valid = cases.find((c) => c.name === 'valid');
  let r = run('receipt', file('ok.json', valid.envelope), '--jwks', jwks);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^OK rcpt_\S+ tenant acme key \S+ signed_at \S+ payload checked/);
  r = run('receipt', file('bad.json', cases.find((c) => c.name === 'tampered payload').envelope), '--jwks', jwks);
  assert.equal(r.code, 1);
  assert.match(r.out, /^FAILED verify receipt: payload: payload_digest/);
});

test('webhook', () => {
  const { key_sets: sets, cases } = vectors('webhooks.json');
  const c = cases.find((c) => c.name === 'valid v1a and v1');
  const h = c.headers;
  const args = ['webhook', '--body', file('body.json', c.body), '--id', h['webhook-id'], '--timestamp', h['webhook-timestamp'], '--signature', h['webhook-signature']];
  // The vector's timestamp is long past: a tolerance of a century lets it through.
  let r = run(...args, '--jwks', file('jwks.json', sets.jwks_2026q4), '--secret', c.secrets[0], '--tolerance', String(100 * 365 * 86400));
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /^OK rcpt_/);
  r = run(...args, '--secret', c.secrets[0], '--tolerance', String(100 * 365 * 86400));
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /v1 only/);
  r = run(...args, '--jwks', file('jwks.json', sets.jwks_2026q4));
  assert.equal(r.code, 1);
  assert.match(r.out, /^FAILED verify webhook: timestamp: outside_tolerance/);
});

test('usage', () => {
  for (const args of [[], ['nope'], ['receipt', 'x.json'], ['webhook', '--body', 'x'], ['receipt', '--frobnicate']]) {
    assert.equal(run(...args).code, 2, args.join(' '));
  }
});

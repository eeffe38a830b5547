#!/usr/bin/env node
// sealpost-verify: verify a sealpost receipt envelope or a captured webhook
// from the command line.
//
//   sealpost-verify receipt ENVELOPE.json --jwks FILE|URL
//   sealpost-verify webhook --body FILE --id ID --timestamp TS --signature SIG
//                           [--jwks FILE|URL] [--secret whsec_...]... [--tolerance SECONDS]
//
// Prints "OK ..." and exits 0, or "FAILED verify ...: <step>: <code>..." and exits 1;
// exits 2 on a usage error. A secret may also come from the environment
// variable SEALPOST_WEBHOOK_SECRET, which keeps it out of the process list.
// For an https JWKS behind a private CA, set NODE_EXTRA_CA_CERTS=ca.pem.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { JwksClient, KeySetError, MAX_ENVELOPE_SIZE, MAX_KEY_SET_SIZE, parseKeySet, VerifyError, verifyReceipt, verifyWebhook } from '../index.js';

const usage = `usage:
  sealpost-verify receipt ENVELOPE.json --jwks FILE|URL
  sealpost-verify webhook --body FILE --id ID --timestamp TS --signature SIG [--jwks FILE|URL] [--secret whsec_...]... [--tolerance SECONDS]`;

function readLimited(path, max, what) {
  const b = readFileSync(path);
  if (b.length > max) throw new UsageError(`${what} ${path} is larger than ${max} bytes`);
  return b;
}

class UsageError extends Error {}

async function loadKeys(src) {
  if (/^https?:\/\//.test(src)) {
    return new JwksClient(src, { allowHttp: src.startsWith('http://127.') || src.startsWith('http://localhost') }).keySet();
  }
  return parseKeySet(readLimited(src, MAX_KEY_SET_SIZE, 'key set'));
}

function describe(v) {
  return `OK ${v.receipt.id} tenant ${v.receipt.tenant} key ${v.keyId} signed_at ${v.receipt.signed_at} payload ${v.payloadPresent ? 'checked' : 'absent'}`;
}

async function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      jwks: { type: 'string' },
      body: { type: 'string' },
      id: { type: 'string' },
      timestamp: { type: 'string' },
      signature: { type: 'string' },
      secret: { type: 'string', multiple: true },
      tolerance: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, ...rest] = positionals;
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (cmd === 'receipt') {
    if (rest.length !== 1 || !values.jwks) throw new UsageError('receipt needs ENVELOPE.json and --jwks');
    const keys = await loadKeys(values.jwks);
    console.log(describe(verifyReceipt(readLimited(rest[0], MAX_ENVELOPE_SIZE, 'envelope'), keys)));
    return 0;
  }
  if (cmd === 'webhook') {
    const secrets = values.secret ?? (process.env.SEALPOST_WEBHOOK_SECRET ? [process.env.SEALPOST_WEBHOOK_SECRET] : []);
    if (rest.length !== 0 || !values.body || values.id === undefined || values.timestamp === undefined || values.signature === undefined) {
      throw new UsageError('webhook needs --body, --id, --timestamp and --signature');
    }
    if (!values.jwks && secrets.length === 0) throw new UsageError('webhook needs --jwks or --secret');
    const tolerance = values.tolerance === undefined ? undefined : Number(values.tolerance);
    if (tolerance !== undefined && !(tolerance > 0)) throw new UsageError('--tolerance must be a positive number of seconds');
    const got = verifyWebhook({
      headers: { 'webhook-id': values.id, 'webhook-timestamp': values.timestamp, 'webhook-signature': values.signature },
      body: readLimited(values.body, MAX_ENVELOPE_SIZE, 'body'),
      keys: values.jwks ? await loadKeys(values.jwks) : null,
      secrets,
      toleranceSeconds: tolerance,
    });
    console.log(got.receipt ? describe(got.receipt) : `OK webhook ${got.id} (v1 only: the receipt was not verified)`);
    return 0;
  }
  throw new UsageError(cmd ? `unknown command ${cmd}` : 'no command');
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    if (e instanceof VerifyError) {
      console.log(`FAILED ${e.message}${e.cause ? ` (${e.cause})` : ''}`);
      process.exit(1);
    }
    if (e instanceof UsageError || e?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || e?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      console.error(`${e.message}\n${usage}`);
      process.exit(2);
    }
    console.error(e instanceof KeySetError || e instanceof TypeError ? e.message : String(e?.stack ?? e));
    process.exit(1);
  },
);

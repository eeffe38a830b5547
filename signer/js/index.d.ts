// Type declarations for @sealpost/verify.

import type { KeyObject } from 'node:crypto';

/** Steps of verification, as in the shared vectors and Go's signer package. */
export type VerifyStep =
  | 'envelope' | 'receipt' | 'signature' | 'key' | 'window' | 'revocation' | 'payload'
  | 'headers' | 'timestamp' | 'v1a' | 'v1';

/** Outcomes of a failed verification. */
export type VerifyCode =
  | 'malformed' | 'unknown_key' | 'key_mismatch' | 'outside_window' | 'revoked'
  | 'bad_signature' | 'payload_digest' | 'outside_tolerance' | 'id_mismatch';

/** A verification failure: the step that failed and why. */
export class VerifyError extends Error {
  readonly step: VerifyStep;
  readonly code: VerifyCode;
  /** "lossy_number" when a number that does not survive an IEEE-754 double is the reason. */
  readonly cause: 'lossy_number' | undefined;
}

/** A document that is not JSON as JCS accepts it. */
export class JSONError extends Error {
  readonly code: 'malformed' | 'lossy_number';
}

/** A JWKS or key-history document that is refused, or could not be fetched. */
export class KeySetError extends Error {}

/** Bytes or text of a JSON document. Verify the bytes as received. */
export type Input = string | Uint8Array;

/** A JSON value. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [name: string]: JSONValue };

/** A number as written, with its value as a double. */
export class JsonNumber {
  readonly text: string;
  readonly value: number;
}

export const MAX_DEPTH: number;
export function parseJSON(input: Input, options?: { rawNumbers?: false }): JSONValue;
export function parseJSON(input: Input, options: { rawNumbers: true }): unknown;
/** The JCS (RFC 8785) text of a value. */
export function canonicalize(value: unknown): string;
/** Parses a document strictly and returns its JCS text. */
export function canonicalizeText(input: Input): string;
/** A double as JCS writes it. */
export function formatNumber(n: number): string;

/** A published key. Times are nanoseconds since the Unix epoch, or null when absent. */
export interface PublicKey {
  readonly kid: string;
  readonly x: string;
  readonly publicKey: KeyObject | null;
  /** "" in a JWKS; next, active, grace, expired or revoked in the key history. */
  readonly status: string;
  readonly issuedAt: bigint | null;
  readonly notBefore: bigint | null;
  readonly expires: bigint | null;
  readonly signsUntil: bigint | null;
  readonly revokedAt: bigint | null;
}

export class KeySet {
  readonly keys: readonly PublicKey[];
  lookup(kid: string): PublicKey | undefined;
}

export const MAX_KEY_SET_SIZE: number;
/** Parses a JWKS or key-history document strictly. Throws KeySetError. */
export function parseKeySet(doc: Input): KeySet;
/** The RFC 7638 thumbprint of an Ed25519 public key. */
export function thumbprint(pub: Uint8Array): string;
/** A receipt time as nanoseconds, or null when it is not in the receipt layout. */
export function parseTime(s: string): bigint | null;

/** The receipt member of an envelope. */
export interface Receipt {
  v: 1;
  id: string;
  kid: string;
  tenant: string;
  route: string;
  channel: string;
  received_at: string;
  signed_at: string;
  source: JSONValue;
  payload_sha256: string;
  raw_sha256: string;
  raw_size: number;
}

export interface VerifiedReceipt {
  receipt: Receipt;
  /** The payload, when the envelope carried one. */
  payload: JSONValue | undefined;
  /** Whether the payload was present and matched payload_sha256. */
  payloadPresent: boolean;
  /** The kid of the key that verified the signature. */
  keyId: string;
}

export const MAX_ENVELOPE_SIZE: number;
/** Verifies a receipt envelope offline against a JWKS or key history. Throws VerifyError. */
export function verifyReceipt(envelope: Input, keys: KeySet): VerifiedReceipt;
/** base64url(SHA-256(JCS(payload))). */
export function payloadDigest(payload: unknown): string;

/** Request headers: a fetch Headers object, node's req.headers, or a plain object with lower-case names. */
export type HeadersLike = { get(name: string): string | null } | Record<string, string | string[] | undefined>;

export interface VerifyWebhookOptions {
  headers: HeadersLike;
  /** The raw body, exactly as received. */
  body: Input;
  /** The published keys: a v1a signature and the receipt are verified when given. */
  keys?: KeySet | null;
  /** whsec_ secrets: a v1 signature by one of them is required when given. */
  secrets?: string[];
  /** Default 300. */
  toleranceSeconds?: number;
  /** The receiver's clock: a Date or milliseconds. Default the clock. */
  now?: Date | number;
}

export interface VerifiedWebhook {
  /** webhook-id: the receipt id, the same on every retry. Dedupe on it. */
  id: string;
  /** webhook-timestamp, in Unix seconds. */
  timestamp: number;
  /** The verified receipt, or null when no keys were given. */
  receipt: VerifiedReceipt | null;
}

export const DEFAULT_TOLERANCE_SECONDS: number;
export const MAX_SIGNATURE_HEADER: number;
export const MAX_ID_LENGTH: number;
/** Verifies a webhook request. Throws VerifyError, or TypeError for bad options. */
export function verifyWebhook(options: VerifyWebhookOptions): VerifiedWebhook;
/** The key bytes of a whsec_ secret. Throws a TypeError that does not contain the secret. */
export function decodeSecret(secret: string, index?: number): Buffer;

export interface JwksClientOptions {
  /** Least time between two refetches asked for by refresh(). Default 60000. */
  minRefreshIntervalMs?: number;
  /** Largest response accepted. Default 1 MiB. */
  maxBytes?: number;
  /** Default 10000. */
  timeoutMs?: number;
  /** Allow an http:// URL (tests, loopback). Default false. */
  allowHttp?: boolean;
  fetch?: typeof globalThis.fetch;
  now?: () => number;
}

/** Fetches and caches a JWKS or key history. */
export class JwksClient {
  constructor(url: string | URL, options?: JwksClientOptions);
  readonly url: string;
  /** Requests made so far. */
  readonly fetches: number;
  /** The cached key set, fetched when missing or expired. */
  keySet(): Promise<KeySet>;
  /** Refetches unless the last fetch is more recent than minRefreshIntervalMs; returns whether it did. */
  refresh(): Promise<boolean>;
}

export interface WebhookVerifierOptions {
  /** A JWKS URL, or a JwksClient. */
  jwks: string | URL | JwksClient;
  secrets?: string[];
  toleranceSeconds?: number;
  clientOptions?: JwksClientOptions;
}

/** Verifies webhooks against a JWKS URL, refreshing the keys on an unknown kid. */
export class WebhookVerifier {
  constructor(options: WebhookVerifierOptions);
  readonly client: JwksClient;
  verify(headers: HeadersLike, body: Input, options?: { now?: Date | number }): Promise<VerifiedWebhook>;
  verifyReceipt(envelope: Input): Promise<VerifiedReceipt>;
}

// JSON parsing and JCS (RFC 8785) canonicalization, with the rules sealpost
// applies everywhere (Go's signer.Canonicalize): UTF-8 only, no duplicate
// member names (compared after unescaping), no lone surrogates, and no
// number whose value JCS would change (a lossy number: 12345678901234567890
// becomes 12345678901234567000 as a double). JSON.parse accepts all of these
// silently, so the kit has its own parser.

import { JSONError, shorten } from './errors.js';

/** MAX_DEPTH is the deepest nesting of arrays and objects the parser accepts. */
export const MAX_DEPTH = 1000;

/**
 * JsonNumber is a number as written in the document, with its value as a
 * double. parseJSON returns these with { rawNumbers: true }, for members
 * whose text matters (integer types, JWK dates).
 */
export class JsonNumber {
  constructor(text, value) {
    this.text = text;
    this.value = value;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * parseJSON parses a document (UTF-8 bytes or a string) strictly. Numbers
 * are doubles, or JsonNumber objects with { rawNumbers: true }. Objects are
 * plain objects; a "__proto__" member is an ordinary own property.
 * Throws JSONError with code "malformed" or "lossy_number".
 */
export function parseJSON(input, { rawNumbers = false } = {}) {
  let text;
  if (typeof input === 'string') {
    if (!input.isWellFormed()) throw new JSONError('malformed', 'the text has a lone surrogate');
    text = input;
  } else {
    try {
      text = utf8.decode(input);
    } catch {
      throw new JSONError('malformed', 'the document is not valid UTF-8');
    }
  }
  const p = new Parser(text, rawNumbers);
  p.ws();
  const v = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail('data after the document');
  return v;
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

class Parser {
  constructor(s, rawNumbers) {
    this.s = s;
    this.i = 0;
    this.raw = rawNumbers;
  }

  fail(what) {
    throw new JSONError('malformed', `${what} at offset ${this.i}`);
  }

  ws() {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      this.i++;
    }
  }

  value(depth) {
    const c = this.s[this.i];
    if (c === '{') return this.object(depth + 1);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.string();
    for (const [lit, v] of [['true', true], ['false', false], ['null', null]]) {
      if (this.s.startsWith(lit, this.i)) {
        this.i += lit.length;
        return v;
      }
    }
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (!m) this.fail('expected a value');
    this.i += m[0].length;
    const value = checkNumber(m[0]);
    return this.raw ? new JsonNumber(m[0], value) : value;
  }

  array(depth) {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
    this.i++;
    const out = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') this.fail("expected ',' or ']'");
    }
  }

  object(depth) {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
    this.i++;
    const out = {};
    const seen = new Set();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a member name');
      const name = this.string();
      if (seen.has(name)) throw new JSONError('malformed', `duplicate member ${JSON.stringify(shorten(name))}`);
      seen.add(name);
      this.ws();
      if (this.s[this.i++] !== ':') this.fail("expected ':'");
      this.ws();
      const v = this.value(depth);
      Object.defineProperty(out, name, { value: v, enumerable: true, writable: true, configurable: true });
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') this.fail("expected ',' or '}'");
    }
  }

  string() {
    const s = this.s;
    this.i++; // opening quote
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) this.fail('control character in a string');
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) {
        out += simple;
      } else if (e === 'u') {
        const u = this.hex4();
        if (u >= 0xdc00 && u <= 0xdfff) this.fail('lone low surrogate');
        if (u >= 0xd800 && u <= 0xdbff) {
          if (s[this.i] !== '\\' || s[this.i + 1] !== 'u') this.fail('lone high surrogate');
          this.i += 2;
          const lo = this.hex4();
          if (lo < 0xdc00 || lo > 0xdfff) this.fail('high surrogate without a low surrogate');
          out += String.fromCharCode(u, lo);
        } else {
          out += String.fromCharCode(u);
        }
      } else {
        this.i--;
        this.fail('unknown escape');
      }
      start = this.i;
    }
  }

  hex4() {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail('bad \\u escape');
    this.i += 4;
    return parseInt(h, 16);
  }
}

// Plain integers of up to 15 digits are exact doubles (2^53 > 10^15).
const EXACT = /^-?[0-9]{1,15}$/;

/**
 * checkNumber returns the double a JSON number text denotes, or throws a
 * lossy_number JSONError when its JCS form has another value or it lies
 * beyond a double's range.
 */
export function checkNumber(text) {
  const value = Number(text);
  // String(value) is the JCS text itself: a text equal to it keeps its value.
  if (EXACT.test(text) || String(value) === text) return value;
  if (!Number.isFinite(value)) throw new JSONError('lossy_number', `${shorten(text)} is outside the range of a double`);
  const canon = formatNumber(value);
  if (decimalKey(text) !== decimalKey(canon)) {
    throw new JSONError('lossy_number', `${shorten(text)} would be signed as ${canon}`);
  }
  return value;
}

const DECIMAL = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?$/;

/**
 * decimalKey is the exact decimal value of a JSON number as a string: sign,
 * significant digits and exponent, or "0". Two texts have the same key
 * exactly when they denote the same value.
 */
function decimalKey(text) {
  const m = DECIMAL.exec(text);
  const [, sign, int, frac = '', expSign, expDigits = '0'] = m;
  const all = (int + frac).replace(/^0+/, '');
  const digits = all.replace(/0+$/, '');
  if (digits === '') return '0';
  const e = expDigits.replace(/^0+/, '');
  if (e.length > 9) return `${sign}${digits}e${expSign}huge`; // beyond any double unless zero
  const exp = BigInt(expSign === '-' ? `-${e || '0'}` : e || '0') - BigInt(frac.length) + BigInt(all.length - digits.length);
  return `${sign}${digits}e${exp}`;
}

/** formatNumber writes a double as JCS does: ECMAScript's Number::toString, "0" for -0. */
export function formatNumber(n) {
  if (!Number.isFinite(n)) throw new JSONError('malformed', `${n} has no JSON form`);
  return Object.is(n, -0) ? '0' : String(n);
}

/**
 * canonicalize returns the JCS (RFC 8785) text of a value: as parsed by
 * parseJSON, or built of plain objects, arrays, strings, finite numbers,
 * booleans and null.
 */
export function canonicalize(v) {
  const parts = [];
  write(v, parts, 0);
  return parts.join('');
}

function write(v, out, depth) {
  if (depth > MAX_DEPTH) throw new JSONError('malformed', `nesting deeper than ${MAX_DEPTH}`);
  if (v === null) out.push('null');
  else if (v === true || v === false) out.push(String(v));
  else if (typeof v === 'number') out.push(formatNumber(v));
  else if (v instanceof JsonNumber) out.push(formatNumber(v.value));
  else if (typeof v === 'string') out.push(quote(v));
  else if (Array.isArray(v)) {
    out.push('[');
    v.forEach((e, i) => {
      if (i > 0) out.push(',');
      write(e, out, depth + 1);
    });
    out.push(']');
  } else if (typeof v === 'object') {
    // Array.prototype.sort compares strings by UTF-16 code units, the
    // order RFC 8785 section 3.2.3 requires.
    const names = Object.keys(v).sort();
    out.push('{');
    names.forEach((name, i) => {
      if (i > 0) out.push(',');
      out.push(quote(name), ':');
      write(v[name], out, depth + 1);
    });
    out.push('}');
  } else {
    throw new JSONError('malformed', `a ${typeof v} has no JSON form`);
  }
}

// JSON.stringify escapes exactly what RFC 8785 section 3.2.2.2 escapes
// (", \, and controls, with \b \t \n \f \r short) for well-formed strings.
function quote(s) {
  if (!s.isWellFormed()) throw new JSONError('malformed', 'a string has a lone surrogate');
  return JSON.stringify(s);
}

/** canonicalizeText parses a document strictly and returns its JCS text. */
export function canonicalizeText(input) {
  return canonicalize(parseJSON(input));
}

/** toPlain replaces JsonNumber objects by their doubles. */
export function toPlain(v) {
  if (v instanceof JsonNumber) return v.value;
  if (Array.isArray(v)) return v.map(toPlain);
  if (v !== null && typeof v === 'object') {
    const out = {};
    for (const name of Object.keys(v)) {
      Object.defineProperty(out, name, { value: toPlain(v[name]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return v;
}

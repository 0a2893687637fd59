// The keyless read of a transitInfo's protected header (Go:
// internal/transit.ParseHeader; docs/PROTOCOL.md, "transitInfo"). A client
// cannot open a transitInfo; it checks its shape so that what it forwards
// parses everywhere, and may read exp (unauthenticated) as a hint.

import { b64urlDecode } from './base64.js';
import { ErrMalformedTransitInfo, PseudonymizerError } from './errors.js';

/** The longest transitInfo, in characters. */
export const MAX_TRANSIT_INFO_LEN = 4096;

/** The protected header of a transitInfo: readable by anyone, not authenticated for a reader without the key. */
export interface Header {
  readonly kid: string;
  readonly aud: string;
  /** Issued at, seconds since the Unix epoch. */
  readonly iat: number;
  /** Expires at, seconds since the Unix epoch. */
  readonly exp: number;
  /** The only caller principal that may identify or convert it ("" when unbound). */
  readonly sub: string;
}

const malformed = () => new PseudonymizerError(ErrMalformedTransitInfo);

/**
 * parseHeader reads the protected header of a transitInfo without opening
 * it, as strictly as the service: at most 4096 characters, no CR or LF, five
 * parts with the second empty, the first strict base64url of a JSON object
 * whose members are exactly alg "dir", enc "A256GCM", kid, aud, iat, exp
 * and optionally sub. Throws ErrMalformedTransitInfo.
 */
export function parseHeader(ti: string): Header {
  if (ti.length > MAX_TRANSIT_INFO_LEN || /[\r\n]/.test(ti)) throw malformed();
  const parts = ti.split('.');
  if (parts.length !== 5 || parts[1] !== '') throw malformed();
  const hj = b64urlDecode(parts[0]!);
  if (!hj) throw malformed();
  return parseHeaderJSON(hj);
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

function skipSpace(b: Uint8Array, i: number): number {
  while (i < b.length && WS.has(b[i]!)) i++;
  return i;
}

const fatalUTF8 = new TextDecoder('utf-8', { fatal: true });
const lenientUTF8 = new TextDecoder('utf-8');

// jsonString reads the JSON string at b[i]; undefined when it is not one.
// Strings without escapes must be valid UTF-8 with no control characters;
// strings with escapes are decoded as Go's encoding/json does (invalid UTF-8
// and lone surrogates become U+FFFD).
function jsonString(b: Uint8Array, i: number): [string, number] | undefined {
  if (i >= b.length || b[i] !== 0x22) return undefined;
  let escaped = false;
  for (let j = i + 1; j < b.length; j++) {
    const c = b[j]!;
    if (c === 0x5c) {
      escaped = true;
      j++;
    } else if (c === 0x22) {
      const raw = b.subarray(i + 1, j);
      if (!escaped) {
        try {
          return [fatalUTF8.decode(raw), j + 1];
        } catch {
          return undefined;
        }
      }
      const s = unescape(raw);
      return s === undefined ? undefined : [s, j + 1];
    } else if (c < 0x20) {
      return undefined;
    }
  }
  return undefined;
}

const HEX = /^[0-9a-fA-F]{4}$/;

// unescape decodes the body of a JSON string with escapes, as Go's
// encoding/json: the escapes of RFC 8259, surrogate pairs joined, anything
// invalid as UTF-16 or UTF-8 replaced by U+FFFD.
function unescape(raw: Uint8Array): string | undefined {
  let out = '';
  let start = 0;
  const units: number[] = [];
  const flushUnits = () => {
    for (let k = 0; k < units.length; k++) {
      const u = units[k]!;
      if (u >= 0xd800 && u < 0xdc00 && k + 1 < units.length && units[k + 1]! >= 0xdc00 && units[k + 1]! < 0xe000) {
        out += String.fromCharCode(u, units[k + 1]!);
        k++;
      } else if (u >= 0xd800 && u < 0xe000) {
        out += '\ufffd';
      } else {
        out += String.fromCharCode(u);
      }
    }
    units.length = 0;
  };
  for (let j = 0; j < raw.length; j++) {
    if (raw[j] !== 0x5c) continue;
    if (j > start) {
      flushUnits();
      out += lenientUTF8.decode(raw.subarray(start, j));
    }
    const e = raw[j + 1];
    if (e === undefined) return undefined;
    const simple: Record<number, string> = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };
    if (e === 0x75) {
      const h = String.fromCharCode(...raw.subarray(j + 2, j + 6));
      if (!HEX.test(h)) return undefined;
      units.push(parseInt(h, 16));
      j += 5;
    } else if (simple[e] !== undefined) {
      flushUnits();
      out += simple[e];
      j += 1;
    } else {
      return undefined;
    }
    start = j + 1;
  }
  flushUnits();
  out += lenientUTF8.decode(raw.subarray(start));
  return out;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

// jsonInt reads a JSON integer (no fraction, no exponent, no leading zero)
// in the signed 64-bit range at b[i].
function jsonInt(b: Uint8Array, i: number): [number, number] | undefined {
  let j = i;
  if (j < b.length && b[j] === 0x2d) j++;
  const start = j;
  while (j < b.length && b[j]! >= 0x30 && b[j]! <= 0x39) j++;
  if (j === start || (b[start] === 0x30 && j - start > 1)) return undefined;
  if (j < b.length && (b[j] === 0x2e || b[j] === 0x65 || b[j] === 0x45)) return undefined;
  const n = BigInt(String.fromCharCode(...b.subarray(i, j)));
  if (n < INT64_MIN || n > INT64_MAX) return undefined;
  return [Number(n), j];
}

function parseHeaderJSON(hj: Uint8Array): Header {
  const h = { kid: '', aud: '', iat: 0, exp: 0, sub: '' };
  let alg = '';
  let enc = '';
  const seen = new Set<string>();
  let i = skipSpace(hj, 0);
  if (i >= hj.length || hj[i] !== 0x7b) throw malformed();
  i = skipSpace(hj, i + 1);
  if (i < hj.length && hj[i] === 0x7d) throw malformed();
  for (;;) {
    const name = jsonString(hj, i);
    if (!name) throw malformed();
    i = skipSpace(hj, name[1]);
    if (i >= hj.length || hj[i] !== 0x3a) throw malformed();
    i = skipSpace(hj, i + 1);
    const key = name[0];
    if (seen.has(key)) throw malformed();
    seen.add(key);
    switch (key) {
      case 'alg':
      case 'enc':
      case 'kid':
      case 'aud':
      case 'sub': {
        const v = jsonString(hj, i);
        if (!v || v[0] === '') throw malformed();
        if (key === 'alg') alg = v[0];
        else if (key === 'enc') enc = v[0];
        else h[key] = v[0];
        i = v[1];
        break;
      }
      case 'iat':
      case 'exp': {
        const v = jsonInt(hj, i);
        if (!v) throw malformed();
        h[key] = v[0];
        i = v[1];
        break;
      }
      default:
        throw malformed();
    }
    i = skipSpace(hj, i);
    if (i >= hj.length) throw malformed();
    if (hj[i] === 0x7d) break;
    if (hj[i] !== 0x2c) throw malformed();
    i = skipSpace(hj, i + 1);
  }
  if (skipSpace(hj, i + 1) !== hj.length) throw malformed();
  for (const k of ['alg', 'enc', 'kid', 'aud', 'iat', 'exp']) if (!seen.has(k)) throw malformed();
  if (alg !== 'dir' || enc !== 'A256GCM') throw malformed();
  return Object.freeze(h);
}

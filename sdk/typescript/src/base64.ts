// Base64: strict base64url without padding (text forms, transitInfo, as Go's
// base64.RawURLEncoding.Strict()), and standard base64 for the proto3 JSON
// mapping of bytes.

const URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const STD = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function table(alpha: string): Int8Array {
  const t = new Int8Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[alpha.charCodeAt(i)] = i;
  return t;
}
const URL_DEC = table(URL);
const ANY_DEC = (() => {
  const t = table(STD);
  t['-'.charCodeAt(0)] = 62;
  t['_'.charCodeAt(0)] = 63;
  return t;
})();

function encode(b: Uint8Array, alpha: string, pad: boolean): string {
  let s = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    s += alpha[n >> 18]! + alpha[(n >> 12) & 63]! + alpha[(n >> 6) & 63]! + alpha[n & 63]!;
  }
  const rest = b.length - i;
  if (rest === 1) {
    const n = b[i]! << 16;
    s += alpha[n >> 18]! + alpha[(n >> 12) & 63]! + (pad ? '==' : '');
  } else if (rest === 2) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8);
    s += alpha[n >> 18]! + alpha[(n >> 12) & 63]! + alpha[(n >> 6) & 63]! + (pad ? '=' : '');
  }
  return s;
}

// decode reads unpadded base64 with the decoding table dec; it refuses any
// other character, a length of 1 mod 4, and (strict) non-zero unused bits.
function decode(s: string, dec: Int8Array, strict: boolean): Uint8Array | undefined {
  if (s.length % 4 === 1) return undefined;
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? dec[c]! : -1;
    if (v < 0) return undefined;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if (strict && bits > 0 && (acc & ((1 << bits) - 1)) !== 0) return undefined;
  return out;
}

/** b64url encodes bytes as base64url without padding. */
export function b64url(b: Uint8Array): string {
  return encode(b, URL, false);
}

/**
 * b64urlDecode decodes strict base64url without padding: only A–Z a–z 0–9 -
 * _, no padding, no white space, unused low bits zero. Undefined when s is
 * not that.
 */
export function b64urlDecode(s: string): Uint8Array | undefined {
  return decode(s, URL_DEC, true);
}

/** b64std encodes bytes as standard base64 with padding (the proto3 JSON form of bytes). */
export function b64std(b: Uint8Array): string {
  return encode(b, STD, true);
}

/**
 * b64anyDecode decodes the proto3 JSON form of bytes as protojson accepts
 * it: standard or URL-safe alphabet, padding optional.
 */
export function b64anyDecode(s: string): Uint8Array | undefined {
  let t = s;
  if (t.length % 4 === 0 && t.endsWith('==')) t = t.slice(0, -2);
  else if (t.length % 4 === 0 && t.endsWith('=')) t = t.slice(0, -1);
  return decode(t, ANY_DEC, false);
}

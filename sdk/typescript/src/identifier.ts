// Identifiers: normalization and validation before embedding (Go package
// identifier; docs/PROTOCOL.md, "Identifiers"). An identifier is 1 to 29
// bytes; normalization makes equal identifiers byte-equal, which is what
// makes their pseudonyms equal: "85.07.30-033.28" and "85073003328" are the
// same NISS. Errors never quote the refused value.

import {
  ErrEmptyIdentifier,
  ErrIdentifierTooLong,
  ErrInvalidNISS,
  ErrUnknownKind,
  PseudonymizerError,
} from './errors.js';

/** The longest identifier that can be pseudonymized, in bytes (Go: identifier.MaxLen). */
export const MAX_LEN = 29;

/** A kind of identifier: "niss" (NISS/INSZ) or "raw" (an opaque value). */
export type Kind = 'niss' | 'raw';

/** The known kinds (Go: identifier.KindNISS, identifier.KindRaw). */
export const KindNISS: Kind = 'niss';
export const KindRaw: Kind = 'raw';

const utf8 = new TextEncoder();

/** normalize validates s as an identifier of the given kind and returns its normalized bytes. */
export function normalize(kind: Kind, s: string): Uint8Array {
  switch (kind) {
    case 'niss':
      return niss(s);
    case 'raw':
      return raw(s);
    default:
      throw new PseudonymizerError(ErrUnknownKind);
  }
}

/**
 * raw validates an opaque identifier (1 to 29 bytes; a string is taken as
 * its UTF-8 bytes) and returns a copy.
 */
export function raw(v: Uint8Array | string): Uint8Array {
  const b = typeof v === 'string' ? utf8.encode(v) : Uint8Array.from(v);
  if (b.length === 0) throw new PseudonymizerError(ErrEmptyIdentifier);
  if (b.length > MAX_LEN) throw new PseudonymizerError(ErrIdentifierTooLong);
  return b;
}

/**
 * niss normalizes and validates a NISS/INSZ number (national register or BIS
 * number). It accepts the 11 digits with '.', '-', '/' and spaces as
 * separators ("85.07.30-033.28"), at most 32 characters in all, and returns
 * the 11 ASCII digits. The check number is 97 − (first nine digits mod 97),
 * where for people born from 2000 on the nine digits are prefixed with a 2;
 * either is accepted. The month must be 00–12, 20–32 or 40–52.
 */
export function niss(s: string): Uint8Array {
  if (s.length > 32) throw new PseudonymizerError(ErrInvalidNISS);
  const d = new Uint8Array(11);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (n === 11) throw new PseudonymizerError(ErrInvalidNISS);
      d[n++] = c;
    } else if (c !== 0x2e && c !== 0x2d && c !== 0x20 && c !== 0x2f) {
      throw new PseudonymizerError(ErrInvalidNISS);
    }
  }
  if (n !== 11) throw new PseudonymizerError(ErrInvalidNISS);
  let base = 0;
  for (let i = 0; i < 9; i++) base = base * 10 + (d[i]! - 0x30);
  const check = (d[9]! - 0x30) * 10 + (d[10]! - 0x30);
  if (97 - (base % 97) !== check && 97 - ((2_000_000_000 + base) % 97) !== check) {
    throw new PseudonymizerError(ErrInvalidNISS);
  }
  const month = (d[2]! - 0x30) * 10 + (d[3]! - 0x30);
  if (month % 20 > 12 || month > 52) throw new PseudonymizerError(ErrInvalidNISS);
  return d;
}

/** formatNISS writes a normalized NISS as "YY.MM.DD-SSS.CC"; anything else is returned as its text unchanged. */
export function formatNISS(b: Uint8Array): string {
  const s = new TextDecoder().decode(b);
  if (b.length !== 11 || !/^[0-9]{11}$/.test(s)) return s;
  return `${s.slice(0, 2)}.${s.slice(2, 4)}.${s.slice(4, 6)}-${s.slice(6, 9)}.${s.slice(9, 11)}`;
}

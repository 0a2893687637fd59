// ristretto255 points and scalars at the trust boundary, and the embedding of
// identifiers into points (Go package internal/point; docs/PROTOCOL.md,
// "Validation rules", "Encoding an identifier as a point").
//
// The group operations are @noble/curves' (audited). JavaScript's BigInt
// arithmetic is not constant time; like noble, this code avoids secret-
// dependent branches where it can (scalar multiplication with noble's
// constant-time ladder, inversion by Fermat with the public exponent ℓ − 2).

import { ristretto255 } from '@noble/curves/ed25519.js';
import { invertCt } from '@noble/curves/abstract/modular.js';
import {
  ErrEmptyIdentifier,
  ErrIdentifierTooLong,
  ErrIdentity,
  ErrInvalidScalar,
  ErrNoEncoding,
  ErrNonCanonical,
  ErrNotIdentifier,
  ErrPointLength,
  ErrZeroScalar,
  PseudonymizerError,
} from './errors.js';
import { MAX_LEN } from './identifier.js';

/** A ristretto255 element. */
export type Point = InstanceType<typeof ristretto255.Point>;
const RistrettoPoint = ristretto255.Point;

/** The size of an encoded element or scalar. */
export const SIZE = 32;

/** ℓ, the order of the group. */
export const ORDER: bigint = ristretto255.Point.Fn.ORDER;

/**
 * RandomSource returns the next n random bytes. The default reads
 * crypto.getRandomValues; only test vectors need another one.
 */
export type RandomSource = (n: number) => Uint8Array;

/** cryptoRandom is the default RandomSource: crypto.getRandomValues. */
export const cryptoRandom: RandomSource = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n));

/** bytesToScalarLE reads little-endian bytes as an integer. */
export function leToBigint(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

/** scalarToBytes writes a scalar as its 32 little-endian bytes. */
export function scalarToBytes(s: bigint): Uint8Array {
  const b = new Uint8Array(SIZE);
  let n = s;
  for (let i = 0; i < SIZE; i++) {
    b[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return b;
}

/** decodeScalar parses a canonical, non-zero scalar (32 bytes, little-endian, below ℓ). */
export function decodeScalar(b: Uint8Array): bigint {
  if (b.length !== SIZE) throw new PseudonymizerError(ErrInvalidScalar);
  const s = leToBigint(b);
  if (s >= ORDER) throw new PseudonymizerError(ErrInvalidScalar);
  if (s === 0n) throw new PseudonymizerError(ErrZeroScalar);
  return s;
}

/**
 * randomScalar draws a uniformly random non-zero scalar: 64 bytes read as a
 * little-endian integer and reduced mod ℓ (Go's Scalar.SetUniformBytes),
 * drawn again if zero.
 */
export function randomScalar(rnd: RandomSource = cryptoRandom): bigint {
  for (let i = 0; i < 8; i++) {
    const buf = rnd(64);
    if (buf.length !== 64) throw new Error('pseudonymizer: reading randomness failed');
    const s = leToBigint(buf) % ORDER;
    buf.fill(0);
    if (s !== 0n) return s;
  }
  throw new PseudonymizerError(ErrZeroScalar);
}

/** invertScalar returns s⁻¹ mod ℓ (s non-zero). */
export function invertScalar(s: bigint): bigint {
  return invertCt(s, ORDER);
}

/** mulScalar returns a·b mod ℓ. */
export function mulScalar(a: bigint, b: bigint): bigint {
  return (a * b) % ORDER;
}

/**
 * invertAll returns the inverses of non-zero scalars with a single inversion
 * for all (Montgomery's trick); undefined entries stay undefined.
 */
export function invertAll(s: ReadonlyArray<bigint | undefined>): Array<bigint | undefined> {
  const out: Array<bigint | undefined> = new Array(s.length).fill(undefined);
  const idx: number[] = [];
  for (let i = 0; i < s.length; i++) if (s[i] !== undefined) idx.push(i);
  if (idx.length === 0) return out;
  const prefix: bigint[] = new Array(idx.length);
  prefix[0] = s[idx[0]!]!;
  for (let j = 1; j < idx.length; j++) prefix[j] = mulScalar(prefix[j - 1]!, s[idx[j]!]!);
  let inv = invertScalar(prefix[idx.length - 1]!);
  for (let j = idx.length - 1; j > 0; j--) {
    const x = s[idx[j]!]!;
    out[idx[j]!] = mulScalar(inv, prefix[j - 1]!);
    inv = mulScalar(inv, x);
  }
  out[idx[0]!] = inv;
  return out;
}

/** decodePoint parses a valid point: 32 bytes, the canonical encoding of an element, not the identity. */
export function decodePoint(b: Uint8Array): Point {
  if (!(b instanceof Uint8Array) || b.length !== SIZE) throw new PseudonymizerError(ErrPointLength);
  let P: Point;
  try {
    P = RistrettoPoint.fromBytes(b);
  } catch {
    throw new PseudonymizerError(ErrNonCanonical);
  }
  if (P.is0()) throw new PseudonymizerError(ErrIdentity);
  return P;
}

/** mul returns s·P for a non-zero scalar s below ℓ. */
export function mul(P: Point, s: bigint): Point {
  return P.multiply(s);
}

/**
 * encodeIdentifier embeds an identifier of 1 to 29 bytes into a point:
 * b[0] = counter << 1, b[1] = length, b[2..] = the value then zeros, with
 * the smallest counter for which b is a canonical element encoding.
 */
export function encodeIdentifier(v: Uint8Array): Point {
  if (v.length === 0) throw new PseudonymizerError(ErrEmptyIdentifier);
  if (v.length > MAX_LEN) throw new PseudonymizerError(ErrIdentifierTooLong);
  const b = new Uint8Array(SIZE);
  b[1] = v.length;
  b.set(v, 2);
  for (let counter = 0; counter < 128; counter++) {
    b[0] = counter << 1;
    let P: Point;
    try {
      P = RistrettoPoint.fromBytes(b);
    } catch {
      continue;
    }
    if (P.is0()) continue; // unreachable: b[1] != 0
    return P;
  }
  throw new PseudonymizerError(ErrNoEncoding);
}

/** identifierOf extracts the identifier a point embeds (identify's last step). */
export function identifierOf(P: Point): Uint8Array {
  const b = P.toBytes();
  const n = b[1]!;
  if ((b[0]! & 1) !== 0 || n === 0 || n > MAX_LEN) throw new PseudonymizerError(ErrNotIdentifier);
  let pad = 0;
  for (let i = 2 + n; i < SIZE; i++) pad |= b[i]!;
  if (pad !== 0) throw new PseudonymizerError(ErrNotIdentifier);
  return b.slice(2, 2 + n);
}

// The forms a pseudonym takes outside the service and their text encodings
// (Go package pseudonym; docs/PROTOCOL.md, "Text forms"):
//
//   - at rest, P = k·M, what an owner stores: base64url (no padding) of the
//     32-byte encoding, 43 characters;
//   - in transit, (P_T, transitInfo) with P_T = s·P: base64url(P_T) + ":" +
//     transitInfo, which only the domain's owners and the service can open.
//
// Parsing checks that points are canonical and not the identity element.

import { b64url, b64urlDecode } from './base64.js';
import { ErrMalformedText, PseudonymizerError } from './errors.js';
import { decodePoint, SIZE } from './group.js';
import { MAX_TRANSIT_INFO_LEN, parseHeader, type Header } from './transit.js';

const malformed = () => new PseudonymizerError(ErrMalformedText);

function parsePointText(s: string): Uint8Array {
  const b = b64urlDecode(s);
  if (!b || b.length !== SIZE) throw malformed();
  try {
    decodePoint(b);
  } catch {
    throw malformed();
  }
  return b;
}

/** AtRest is a pseudonym at rest: the 32-byte canonical encoding of P. */
export class AtRest {
  readonly bytes: Uint8Array;

  /** The bytes must be a valid point (see AtRest.parse for text). */
  constructor(bytes: Uint8Array) {
    decodePoint(bytes);
    this.bytes = Uint8Array.from(bytes);
  }

  /** parse reads the text form of a pseudonym at rest; throws ErrMalformedText. */
  static parse(s: string): AtRest {
    if (typeof s !== 'string' || s.length !== 43) throw malformed();
    return new AtRest(parsePointText(s));
  }

  /** The text form: base64url without padding, 43 characters. */
  toString(): string {
    return b64url(this.bytes);
  }

  toJSON(): string {
    return this.toString();
  }
}

/** Transit is a pseudonym in transit: a point P_T = s·P and the transitInfo that carries s for the domain's owners. */
export class Transit {
  /** The 32-byte canonical encoding of P_T. */
  readonly point: Uint8Array;
  /** The transitInfo, a compact JWE. */
  readonly info: string;

  /**
   * The point must be valid and the transitInfo well-formed (as Transit.parse
   * checks); throws ErrInvalidPoint or ErrMalformedTransitInfo.
   */
  constructor(point: Uint8Array, info: string) {
    decodePoint(point);
    parseHeader(info);
    this.point = Uint8Array.from(point);
    this.info = info;
  }

  /**
   * parse reads the text form of a pseudonym in transit. It checks the point
   * and the shape of the transitInfo; only a key holder can check the rest.
   * Throws ErrMalformedText.
   */
  static parse(s: string): Transit {
    if (typeof s !== 'string' || s.length < 44 || s[43] !== ':' || s.length - 44 > MAX_TRANSIT_INFO_LEN) throw malformed();
    const p = parsePointText(s.slice(0, 43));
    const info = s.slice(44);
    try {
      parseHeader(info);
    } catch {
      throw malformed();
    }
    return transitUnchecked(p, info);
  }

  /** The text form base64url(P_T) + ":" + transitInfo. */
  toString(): string {
    return b64url(this.point) + ':' + this.info;
  }

  toJSON(): string {
    return this.toString();
  }

  /** header returns the transitInfo's protected header, read without a key: not authenticated. */
  header(): Header {
    return parseHeader(this.info);
  }

  /**
   * expiry returns the exp the transitInfo announces. It is read without a
   * key, so it is not authenticated: use it to decide whether a transit
   * pseudonym is still worth sending, not to trust it.
   */
  expiry(): Date {
    return new Date(this.header().exp * 1000);
  }

  /** subject returns the sub the transitInfo announces ("" when unbound), unauthenticated like expiry. */
  subject(): string {
    return this.header().sub;
  }
}

/** transitUnchecked makes a Transit of a point and transitInfo already checked. */
export function transitUnchecked(point: Uint8Array, info: string): Transit {
  const t = Object.create(Transit.prototype) as Transit;
  Object.defineProperty(t, 'point', { value: point, enumerable: true });
  Object.defineProperty(t, 'info', { value: info, enumerable: true });
  return t;
}

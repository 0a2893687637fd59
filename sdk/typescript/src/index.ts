// @ehealth-pseudo/pseudonymizer: the TypeScript client SDK of the blind
// pseudonymization service (docs/PROTOCOL.md), for browsers and Node. It
// embeds identifiers into ristretto255 points, blinds them, and unblinds the
// service's answers; Client calls the service's REST gateway.

export * from './errors.js';
export { MAX_LEN, KindNISS, KindRaw, formatNISS, niss, normalize, raw, type Kind } from './identifier.js';
export {
  SIZE,
  ORDER,
  cryptoRandom,
  decodePoint,
  decodeScalar,
  encodeIdentifier,
  identifierOf,
  invertAll,
  randomScalar,
  scalarToBytes,
  type Point,
  type RandomSource,
} from './group.js';
export { MAX_TRANSIT_INFO_LEN, parseHeader, type Header } from './transit.js';
export { AtRest, Transit } from './pseudonym.js';
export {
  BatchUnblinder,
  Unblinder,
  blind,
  blindBatch,
  blindTransit,
  blindTransitBatch,
  type BatchResults,
  type BlindOptions,
  type Blinded,
  type BlindedBatch,
} from './blind.js';
export {
  Client,
  defaultRetryPolicy,
  type CallOptions,
  type ClientOptions,
  type DomainInfo,
  type Operation,
  type RetryPolicy,
  type TransitInput,
} from './client.js';
export { b64url, b64urlDecode, b64std, b64anyDecode } from './base64.js';

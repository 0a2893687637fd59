// Errors of the protocol (docs/PROTOCOL.md, "Errors"), mirroring the Go
// packages protoerr and client: the same names (ErrExpired, ErrUnknownKid,
// ...), the same gRPC codes and ErrorReason names, the same fixed messages of
// the service. Test an error with isError(err, ErrExpired), the counterpart
// of Go's errors.Is(err, client.ErrExpired). No error carries a point,
// scalar, key, identifier or pseudonym.

/** gRPC status codes (google.rpc.Code), by their canonical names. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** A gRPC status code. */
export type Code = (typeof Code)[keyof typeof Code];

const codeNames: readonly string[] = Object.keys(Code);

/** codeName returns the canonical name of a gRPC code ("FAILED_PRECONDITION"), or "CODE(n)". */
export function codeName(code: number): string {
  return codeNames[code] ?? `CODE(${code})`;
}

/** The ErrorInfo.domain of the service's errors. */
export const ERROR_DOMAIN = 'pseudonymizer.v1';

const UNSPECIFIED = 'ERROR_REASON_UNSPECIFIED';

/**
 * ErrorKind is one error of the protocol, the counterpart of a Go sentinel
 * (protoerr.ErrExpired, client.ErrMissingResult, ...). Errors thrown by this
 * package are PseudonymizerError instances whose kind is one of these.
 */
export interface ErrorKind {
  /** The Go name of the sentinel, e.g. "ErrExpired". */
  readonly name: string;
  /** The Go sentinel's text, e.g. "protoerr: transitInfo has expired". */
  readonly text: string;
  /** The kind this one wraps (ErrIdentity wraps ErrInvalidPoint). */
  readonly parent?: ErrorKind;
  /** For the errors the service reports: the row of Go's protoerr table. */
  readonly status?: {
    readonly code: Code;
    readonly reason: string;
    /** The fixed status message the service sends. */
    readonly message: string;
    /** An error of one item of a batch (else of a whole call). */
    readonly perItem: boolean;
  };
}

function kind(name: string, text: string, parent?: ErrorKind): ErrorKind {
  return Object.freeze(parent ? { name, text, parent } : { name, text });
}

function row(name: string, text: string, code: Code, reason: string, message: string, perItem: boolean): ErrorKind {
  return Object.freeze({ name, text, status: Object.freeze({ code, reason, message, perItem }) });
}

// Points and scalars.

/** Anything that is not a valid point: not 32 bytes, not canonical, or the identity; or a point the service refused. */
export const ErrInvalidPoint = row('ErrInvalidPoint', 'protoerr: invalid point', Code.INVALID_ARGUMENT,
  'ERROR_REASON_INVALID_POINT', 'invalid point: not a 32-byte canonical ristretto255 encoding of a non-identity element', true);
/** An encoding that is not 32 bytes (wraps ErrInvalidPoint). */
export const ErrPointLength = kind('ErrPointLength', 'protoerr: invalid point: not 32 bytes', ErrInvalidPoint);
/** 32 bytes that are not the canonical encoding of a ristretto255 element (wraps ErrInvalidPoint). */
export const ErrNonCanonical = kind('ErrNonCanonical', 'protoerr: invalid point: non-canonical encoding', ErrInvalidPoint);
/** The identity element (wraps ErrInvalidPoint). */
export const ErrIdentity = kind('ErrIdentity', 'protoerr: invalid point: identity element', ErrInvalidPoint);
/** Anything that is not a valid scalar. */
export const ErrInvalidScalar = kind('ErrInvalidScalar', 'protoerr: invalid scalar');
/** The zero scalar (wraps ErrInvalidScalar). */
export const ErrZeroScalar = kind('ErrZeroScalar', 'protoerr: invalid scalar: zero', ErrInvalidScalar);

// Identifiers.

/** An identifier of zero bytes. */
export const ErrEmptyIdentifier = kind('ErrEmptyIdentifier', 'protoerr: identifier is empty');
/** An identifier over 29 bytes. */
export const ErrIdentifierTooLong = kind('ErrIdentifierTooLong', 'protoerr: identifier is longer than 29 bytes');
/** An identifier for which no counter gives a valid point (probability below 1e-15). */
export const ErrNoEncoding = kind('ErrNoEncoding', 'protoerr: identifier has no point encoding');
/** Identify gave a point that embeds no identifier (the transit pseudonym was not made from one). */
export const ErrNotIdentifier = kind('ErrNotIdentifier', 'protoerr: point does not embed an identifier');
/** A text that is not a valid NISS/INSZ (Go: identifier.ErrInvalidNISS). */
export const ErrInvalidNISS = kind('ErrInvalidNISS', 'identifier: invalid NISS');
/** An identifier kind this package does not know (Go: identifier.ErrUnknownKind). */
export const ErrUnknownKind = kind('ErrUnknownKind', 'identifier: unknown kind');

// transitInfo, per item.

/** A transitInfo whose shape, header, lengths, base64url or payload is not what the protocol allows. */
export const ErrMalformedTransitInfo = row('ErrMalformedTransitInfo', 'protoerr: transitInfo is malformed',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_MALFORMED_TRANSIT_INFO', 'malformed transitInfo', true);
/** A transit pseudonym sealed under a transit key the domain no longer accepts: obtain it again. */
export const ErrUnknownKid = row('ErrUnknownKid', 'protoerr: transitInfo sealed under an unknown key id',
  Code.FAILED_PRECONDITION, 'ERROR_REASON_UNKNOWN_KID', 'transitInfo sealed under a transit key the domain no longer accepts', true);
/** A transitInfo that failed authentication (altered, or another key). */
export const ErrBadTag = row('ErrBadTag', 'protoerr: transitInfo failed authentication',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_BAD_TAG', 'transitInfo failed authentication', true);
/** A transit pseudonym of another domain. */
export const ErrWrongAudience = row('ErrWrongAudience', 'protoerr: transitInfo is for another audience',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_WRONG_AUDIENCE', 'transitInfo is for another domain', true);
/** A transitInfo issued more than 60 s in the future. */
export const ErrNotYetValid = row('ErrNotYetValid', 'protoerr: transitInfo is not yet valid',
  Code.FAILED_PRECONDITION, 'ERROR_REASON_NOT_YET_VALID', 'transitInfo is not yet valid', true);
/** A transitInfo that expired more than 60 s ago: ask the owner for a fresh one. */
export const ErrExpired = row('ErrExpired', 'protoerr: transitInfo has expired',
  Code.FAILED_PRECONDITION, 'ERROR_REASON_EXPIRED', 'transitInfo has expired', true);
/** A transit pseudonym bound (sub) to another caller. */
export const ErrSubjectMismatch = row('ErrSubjectMismatch', 'protoerr: transitInfo is bound to another subject',
  Code.PERMISSION_DENIED, 'ERROR_REASON_WRONG_SUBJECT', 'transitInfo is bound to another caller', true);
/** A transitInfo whose exp − iat exceeds the domain's maximum lifetime (metadata max_lifetime_seconds). */
export const ErrLifetimeTooLong = row('ErrLifetimeTooLong', 'protoerr: transitInfo lifetime exceeds the maximum',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_LIFETIME_TOO_LONG', "transitInfo lifetime (exp - iat) exceeds the domain's maximum", true);
/** The replica that answered reached the seal limit of the active transit key: an administrator must rotate it. */
export const ErrTransitKeyExhausted = row('ErrTransitKeyExhausted', 'protoerr: transit key reached its seal limit: rotate it',
  Code.FAILED_PRECONDITION, 'ERROR_REASON_TRANSIT_KEY_EXHAUSTED', "the domain's active transit key reached its seal limit: it must be rotated", true);

// Whole calls.

/** More items than the service's maximum batch size (metadata max_batch_size). */
export const ErrBatchTooLarge = row('ErrBatchTooLarge', 'protoerr: too many items in one request',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_BATCH_TOO_LARGE', 'too many items', false);
/** A request that does not decode (malformed, invalid UTF-8, an item id over 256 bytes). */
export const ErrMalformedRequest = row('ErrMalformedRequest', 'protoerr: malformed request',
  Code.INVALID_ARGUMENT, 'ERROR_REASON_MALFORMED_REQUEST', 'malformed request', false);
/** A request that names no domain. */
export const ErrEmptyDomain = row('ErrEmptyDomain', 'protoerr: empty domain name',
  Code.INVALID_ARGUMENT, UNSPECIFIED, 'domain name is empty', false);
/** A convert from a domain into itself. */
export const ErrSameDomain = row('ErrSameDomain', 'protoerr: convert within one domain',
  Code.INVALID_ARGUMENT, UNSPECIFIED, 'from_domain and to_domain are the same', false);
/** The policy does not allow this caller this operation, or the domain does not exist. */
export const ErrOperationNotAllowed = row('ErrOperationNotAllowed', 'protoerr: operation not allowed',
  Code.PERMISSION_DENIED, 'ERROR_REASON_OPERATION_NOT_ALLOWED', 'permission denied', false);
/** A convert target named by the caller's policy that does not exist. */
export const ErrUnknownDomain = row('ErrUnknownDomain', 'protoerr: unknown domain',
  Code.NOT_FOUND, 'ERROR_REASON_UNKNOWN_DOMAIN', 'unknown domain', false);
/** The service cannot read its key store; retry later. */
export const ErrKeyStoreUnavailable = row('ErrKeyStoreUnavailable', 'protoerr: key store unavailable',
  Code.UNAVAILABLE, UNSPECIFIED, 'key store unavailable, retry later', false);
/** A call without a verified principal. */
export const ErrUnauthenticated = row('ErrUnauthenticated', 'protoerr: no authenticated principal',
  Code.UNAUTHENTICATED, UNSPECIFIED, 'unauthenticated', false);
/** The caller's quota is spent; the status carries a RetryInfo. */
export const ErrRateLimited = row('ErrRateLimited', 'protoerr: rate limit reached',
  Code.RESOURCE_EXHAUSTED, 'ERROR_REASON_RATE_LIMITED', 'rate limit reached, retry later', false);
/** A stream idle for too long (gRPC streams only). */
export const ErrStreamIdle = row('ErrStreamIdle', 'protoerr: stream idle for too long',
  Code.DEADLINE_EXCEEDED, UNSPECIFIED, 'stream idle for too long: no message received', false);
/** Anything unexpected. */
export const ErrInternal = row('ErrInternal', 'protoerr: internal error',
  Code.INTERNAL, UNSPECIFIED, 'internal error', false);

// The client's own (Go: package client and package pseudonym).

/** The service's answer lacked an item. */
export const ErrMissingResult = kind('ErrMissingResult', 'client: the service returned no result for an item');
/** A batch call got arrays of different lengths. */
export const ErrLengthMismatch = kind('ErrLengthMismatch', 'client: batch lengths differ');
/** Unblind was given no transitInfo. */
export const ErrMissingTransitInfo = kind('ErrMissingTransitInfo', 'client: missing transitInfo');
/** A text that is not the text form of a pseudonym (Go: pseudonym.ErrMalformedText). */
export const ErrMalformedText = kind('ErrMalformedText', 'pseudonym: malformed text form');

/** The rows of Go's protoerr table, in its order (the order Match tries them). */
export const statusTable: readonly ErrorKind[] = Object.freeze([
  ErrInvalidPoint, ErrMalformedTransitInfo, ErrUnknownKid, ErrBadTag, ErrWrongAudience, ErrNotYetValid,
  ErrExpired, ErrSubjectMismatch, ErrLifetimeTooLong, ErrTransitKeyExhausted,
  ErrBatchTooLarge, ErrMalformedRequest, ErrEmptyDomain, ErrSameDomain, ErrOperationNotAllowed,
  ErrUnknownDomain, ErrKeyStoreUnavailable, ErrUnauthenticated, ErrRateLimited, ErrStreamIdle, ErrInternal,
]);

/** byReason returns the row of an ErrorReason name; ERROR_REASON_UNSPECIFIED names none (see matchStatus). */
export function byReason(reason: string): ErrorKind | undefined {
  if (reason === UNSPECIFIED) return undefined;
  return statusTable.find((k) => k.status!.reason === reason);
}

/**
 * matchStatus returns the row of a status the service reported, as Go's
 * protoerr.Match: the reason alone names it, except ERROR_REASON_UNSPECIFIED
 * (or none), whose rows are told apart by code, and by message where codes
 * coincide. Undefined when no row, or several, fit.
 */
export function matchStatus(code: number, reason: string | undefined, message: string | undefined): ErrorKind | undefined {
  if (reason && reason !== UNSPECIFIED) return byReason(reason);
  let found: ErrorKind | undefined;
  let n = 0;
  for (const k of statusTable) {
    const s = k.status!;
    if (s.reason !== UNSPECIFIED || s.code !== code) continue;
    if (s.message === message) return k;
    found = k;
    n++;
  }
  return n === 1 ? found : undefined;
}

/** A google.rpc.ErrorInfo, as the service sends it. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** A google.rpc.Status in its proto3 JSON form. */
export interface StatusJSON {
  code?: number;
  message?: string;
  details?: Array<Record<string, unknown>>;
}

/**
 * PseudonymizerError is every error this package throws or returns for an
 * item (abort reasons excepted: an aborted call rejects with its signal's
 * reason). kind is the protocol's error it is, when known.
 */
export class PseudonymizerError extends Error {
  override name = 'PseudonymizerError';
  /** The protocol's error this is (undefined for an unknown status). */
  readonly kind: ErrorKind | undefined;

  constructor(kind: ErrorKind | undefined, message?: string, options?: { cause?: unknown }) {
    super(message ?? kind?.text ?? 'pseudonymizer: error', options);
    this.kind = kind;
  }

  /** is reports whether this error is k or wraps it, like Go's errors.Is. */
  is(k: ErrorKind): boolean {
    for (let c = this.kind; c; c = c.parent) if (c === k) return true;
    return false;
  }
}

/** isError reports whether err is a PseudonymizerError of kind k (or of a kind that wraps k): Go's errors.Is. */
export function isError(err: unknown, k: ErrorKind): boolean {
  return err instanceof PseudonymizerError && err.is(k);
}

/** A status read from the service: code, message, ErrorInfo, RetryInfo. */
export interface StatusInfo {
  code: number;
  message: string;
  reason: string;
  metadata: Record<string, string>;
  /** google.rpc.RetryInfo's retry_delay in milliseconds, when present. */
  retryDelayMs: number | undefined;
}

/**
 * ServiceError is an error the service reported as a google.rpc.Status: an
 * ItemError for one item of a batch, a CallError for a whole call.
 */
export abstract class ServiceError extends PseudonymizerError {
  /** The gRPC code (never OK). */
  readonly code: number;
  /** The ErrorReason name, e.g. "ERROR_REASON_EXPIRED"; "" when the status carries none. */
  readonly reason: string;
  /** The status message (fixed text; tell errors apart by reason, never by message). */
  readonly statusMessage: string;
  /** The ErrorInfo metadata, e.g. max_batch_size or max_lifetime_seconds. */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(s: StatusInfo, message: string, options?: { cause?: unknown; match?: boolean }) {
    const code = s.code === Code.OK ? Code.UNKNOWN : s.code;
    super(options?.match === false ? undefined : matchStatus(code, s.reason, s.message), message, options);
    this.code = code;
    this.reason = s.reason;
    this.statusMessage = s.message;
    this.metadata = Object.freeze({ ...s.metadata });
  }
}

/** ItemError is the service's refusal of one item of a batch (Go: client.ItemError). */
export class ItemError extends ServiceError {
  override name = 'ItemError';
  constructor(s: StatusInfo) {
    const code = s.code === Code.OK ? Code.UNKNOWN : s.code;
    super(s, `client: item refused: ${codeName(code)} (${s.reason})`);
  }
}

/**
 * CallError is the failure of a whole call: a status from the service, or
 * one made from the HTTP status or the network failure (UNAVAILABLE) when
 * there was no status to read. Its kind is set only for a status that
 * carries an ErrorInfo (one from the service); tell the others by code.
 */
export class CallError extends ServiceError {
  override name = 'CallError';
  /** The HTTP status of the answer (0: no answer, e.g. a network failure). */
  readonly httpStatus: number;
  /** The delay google.rpc.RetryInfo (or Retry-After) asked for, in milliseconds. */
  readonly retryDelayMs: number | undefined;

  constructor(s: StatusInfo, httpStatus: number, options?: { cause?: unknown }) {
    const code = s.code === Code.OK ? Code.UNKNOWN : s.code;
    const what = s.reason && s.reason !== UNSPECIFIED ? ` (${s.reason})` : '';
    // Only a status of the service (it carries an ErrorInfo) names one of
    // the protocol's errors; one made here from a network failure or a bare
    // HTTP status (a proxy's) has only its code.
    super(s, `pseudonymizer: call failed: ${codeName(code)}${what}: ${s.message}`, { ...options, match: s.reason !== '' });
    this.httpStatus = httpStatus;
    this.retryDelayMs = s.retryDelayMs;
  }
}

/** parseDuration reads a proto3 JSON Duration ("0.250s", "300s") into milliseconds. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(v);
  if (!m) return undefined;
  const ms = Number(m[2]) * 1000 + Number(((m[3] ?? '') + '000000000').slice(0, 9)) / 1e6;
  return m[1] ? -ms : ms;
}

/** readStatus reads a google.rpc.Status in its proto3 JSON form. */
export function readStatus(j: StatusJSON | undefined | null): StatusInfo {
  const s: StatusInfo = {
    code: typeof j?.code === 'number' ? j.code : Code.UNKNOWN,
    message: typeof j?.message === 'string' ? j.message : '',
    reason: '',
    metadata: {},
    retryDelayMs: undefined,
  };
  if (!Array.isArray(j?.details)) return s;
  for (const d of j.details) {
    if (!d || typeof d !== 'object') continue;
    const type = d['@type'];
    if (type === 'type.googleapis.com/google.rpc.ErrorInfo') {
      if (typeof d.reason === 'string') s.reason = d.reason;
      const md = d.metadata;
      if (md && typeof md === 'object') {
        for (const [k, v] of Object.entries(md)) if (typeof v === 'string') s.metadata[k] = v;
      }
    } else if (type === 'type.googleapis.com/google.rpc.RetryInfo') {
      const ms = parseDuration(d.retryDelay);
      if (ms !== undefined) s.retryDelayMs = ms;
    }
  }
  return s;
}

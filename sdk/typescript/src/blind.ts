// Blinding and unblinding (Go: client.Blind, client.Unblinder,
// client.BatchUnblinder; docs/PROTOCOL.md, "Randomness, blinding,
// unblinding").
//
//   Client                                    Pseudonymizer(k)
//   {blinded, unblinder} = blind(id)  --B-->
//                                     <--Y, ti--  Y = (s·k)·B, ti = Seal(s)
//   t = unblinder.unblind(Y, ti)      // pseudonym in transit, for the owner only
//
//   {blinded, unblinder} = blindTransit(t)  --B, ti-->
//                                     <--Y--      Y = (s·k)⁻¹·B
//   id = unblinder.identify(Y)

import {
  ErrInvalidPoint,
  ErrLengthMismatch,
  ErrMissingTransitInfo,
  ErrMalformedTransitInfo,
  PseudonymizerError,
} from './errors.js';
import {
  cryptoRandom,
  decodePoint,
  encodeIdentifier,
  identifierOf,
  invertAll,
  invertScalar,
  mul,
  randomScalar,
  type Point,
  type RandomSource,
} from './group.js';
import { Transit, transitUnchecked } from './pseudonym.js';
import { parseHeader } from './transit.js';

/** Options of blind, blindTransit and their batch forms. */
export interface BlindOptions {
  /**
   * Draws the blinding scalars (64 bytes each) from this source instead of
   * crypto.getRandomValues. Only test vectors need it: a blinding scalar
   * that can be predicted unblinds the request for whoever predicts it.
   */
  rand?: RandomSource;
}

const REDACTED = 'Unblinder(redacted)';

let scalarOf: (u: Unblinder) => bigint;
let setInverse: (u: Unblinder, inv: bigint) => void;
let needsInverse: (u: Unblinder) => boolean;

/**
 * Unblinder is the secret half of a blinded request: the blinding scalar b.
 * Keep it until the service answers, never send or log it; it prints and
 * serializes as "Unblinder(redacted)".
 */
export class Unblinder {
  #b: bigint;
  #bInv: bigint | undefined;

  /** @internal */
  constructor(b: bigint) {
    this.#b = b;
  }

  static {
    // BatchUnblinder's shared inversion reads b and sets b⁻¹; nothing else can.
    scalarOf = (u) => u.#b;
    setInverse = (u, inv) => {
      u.#bInv = inv;
    };
    needsInverse = (u) => u.#bInv === undefined;
  }

  #inverse(): bigint {
    if (this.#bInv === undefined) this.#bInv = invertScalar(this.#b);
    return this.#bInv;
  }

  #unblind(evaluated: Uint8Array): Point {
    return mul(decodePoint(evaluated), this.#inverse());
  }

  /**
   * unblind turns the service's answer to pseudonymize or convert (the point
   * Y and its transitInfo) into a pseudonym in transit P_T = b⁻¹·Y, to
   * forward to the domain's owner. It checks the transitInfo's shape (the
   * client cannot open it): throws ErrMissingTransitInfo,
   * ErrMalformedTransitInfo or ErrInvalidPoint.
   */
  unblind(evaluated: Uint8Array, transitInfo: string): Transit {
    if (!transitInfo) throw new PseudonymizerError(ErrMissingTransitInfo);
    try {
      parseHeader(transitInfo);
    } catch {
      throw new PseudonymizerError(ErrMalformedTransitInfo);
    }
    return transitUnchecked(this.#unblind(evaluated).toBytes(), transitInfo);
  }

  /** identify turns the service's answer to identify into the identifier: M = b⁻¹·Y, then the bytes M embeds. */
  identify(evaluated: Uint8Array): Uint8Array {
    return identifierOf(this.#unblind(evaluated));
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return REDACTED;
  }
}

/** A blinded request: B, to send, and the Unblinder that keeps b. */
export interface Blinded {
  blinded: Uint8Array;
  unblinder: Unblinder;
}

function blindPoint(M: Point, rnd: RandomSource): Blinded {
  const b = randomScalar(rnd);
  return { blinded: mul(M, b).toBytes(), unblinder: new Unblinder(b) };
}

/**
 * blind embeds an identifier (1 to 29 bytes, normalized with niss() or
 * raw()) into a point M and blinds it: B = b·M, to send to pseudonymize.
 */
export function blind(id: Uint8Array, opts: BlindOptions = {}): Blinded {
  return blindPoint(encodeIdentifier(id), opts.rand ?? cryptoRandom);
}

/**
 * blindTransit blinds a pseudonym in transit, for identify (clients) or
 * convert (owners): B = b·P_T, to send with t.info.
 */
export function blindTransit(t: Transit, opts: BlindOptions = {}): Blinded {
  if (!t || !(t.point instanceof Uint8Array)) throw new PseudonymizerError(ErrInvalidPoint);
  return blindPoint(decodePoint(t.point), opts.rand ?? cryptoRandom);
}

/** The results of a batch, item by item: a result or an error. */
export interface BatchResults<T> {
  /** results[i] is item i's result, undefined when errors[i] is set. */
  results: Array<T | undefined>;
  /** errors[i] is item i's own error, undefined when it succeeded. */
  errors: Array<PseudonymizerError | undefined>;
}

/**
 * BatchUnblinder is the secret half of a blinded batch. Unblinding a batch
 * costs one scalar inversion in all, not one per item.
 */
export class BatchUnblinder {
  readonly #u: Array<Unblinder | undefined>;

  /** @internal */
  constructor(u: Array<Unblinder | undefined>) {
    this.#u = u;
  }

  /** The number of items of the batch. */
  get length(): number {
    return this.#u.length;
  }

  /** item returns the Unblinder of item i (undefined if that item failed to blind). */
  item(i: number): Unblinder | undefined {
    return this.#u[i];
  }

  #invert(): void {
    const s = this.#u.map((u) => (u && needsInverse(u) ? scalarOf(u) : undefined));
    const inv = invertAll(s);
    this.#u.forEach((u, i) => {
      if (u && inv[i] !== undefined) setInverse(u, inv[i]!);
    });
  }

  #each<T>(n: number, one: (u: Unblinder, i: number) => T): BatchResults<T> {
    const results: Array<T | undefined> = new Array(this.#u.length).fill(undefined);
    const errors: Array<PseudonymizerError | undefined> = new Array(this.#u.length).fill(undefined);
    if (n !== this.#u.length) {
      errors.fill(new PseudonymizerError(ErrLengthMismatch));
      return { results, errors };
    }
    this.#invert();
    this.#u.forEach((u, i) => {
      if (!u) {
        errors[i] = new PseudonymizerError(ErrInvalidPoint);
        return;
      }
      try {
        results[i] = one(u, i);
      } catch (e) {
        errors[i] = asPseudonymizerError(e);
      }
    });
    return { results, errors };
  }

  /**
   * unblindBatch unblinds the answers to a pseudonymize or convert batch:
   * evaluated[i] and transitInfos[i] answer item i; each item that is
   * invalid, or whose blinding failed, gets its own error.
   */
  unblindBatch(evaluated: Uint8Array[], transitInfos: string[]): BatchResults<Transit> {
    if (evaluated.length !== transitInfos.length) return this.#each(-1, () => undefined as never);
    return this.#each(evaluated.length, (u, i) => u.unblind(evaluated[i]!, transitInfos[i]!));
  }

  /** identifyBatch unblinds the answers to an identify batch into identifiers. */
  identifyBatch(evaluated: Uint8Array[]): BatchResults<Uint8Array> {
    return this.#each(evaluated.length, (u, i) => u.identify(evaluated[i]!));
  }

  toString(): string {
    return 'BatchUnblinder(redacted)';
  }

  toJSON(): string {
    return 'BatchUnblinder(redacted)';
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'BatchUnblinder(redacted)';
  }
}

/** A blinded batch: blinded[i] is undefined and errors[i] says why when item i cannot be blinded. */
export interface BlindedBatch {
  blinded: Array<Uint8Array | undefined>;
  unblinder: BatchUnblinder;
  errors: Array<PseudonymizerError | undefined>;
}

function blindBatchOf<T>(items: readonly T[], one: (x: T) => Blinded): BlindedBatch {
  const blinded: Array<Uint8Array | undefined> = [];
  const us: Array<Unblinder | undefined> = [];
  const errors: Array<PseudonymizerError | undefined> = [];
  for (const x of items) {
    try {
      const r = one(x);
      blinded.push(r.blinded);
      us.push(r.unblinder);
      errors.push(undefined);
    } catch (e) {
      blinded.push(undefined);
      us.push(undefined);
      errors.push(asPseudonymizerError(e));
    }
  }
  return { blinded, unblinder: new BatchUnblinder(us), errors };
}

/** blindBatch blinds many identifiers; an identifier that cannot be blinded gets its own error. */
export function blindBatch(ids: readonly Uint8Array[], opts: BlindOptions = {}): BlindedBatch {
  const rnd = opts.rand ?? cryptoRandom;
  return blindBatchOf(ids, (id) => blindPoint(encodeIdentifier(id), rnd));
}

/** blindTransitBatch blinds many pseudonyms in transit (identify, convert); a missing one gets ErrInvalidPoint. */
export function blindTransitBatch(ts: readonly Transit[], opts: BlindOptions = {}): BlindedBatch {
  const rnd = opts.rand ?? cryptoRandom;
  return blindBatchOf(ts, (t) => blindTransit(t, { rand: rnd }));
}

/** asPseudonymizerError keeps this package's errors and rethrows anything else (a bug, or the randomness failing). */
function asPseudonymizerError(e: unknown): PseudonymizerError {
  if (e instanceof PseudonymizerError) return e;
  throw e;
}

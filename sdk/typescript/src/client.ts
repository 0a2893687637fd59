// Client calls the pseudonymization service through its REST gateway (the
// proto3 JSON mapping of pseudonymizer.v1): it blinds, calls and unblinds,
// for single values and batches, splitting batches at the service's maximum,
// retrying calls that failed with UNAVAILABLE or with RESOURCE_EXHAUSTED and
// a RetryInfo (and the items of a batch the service refused with
// UNAVAILABLE), and caching transit pseudonyms until shortly before they
// expire. The counterpart of Go's client.Client.

import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { b64anyDecode, b64std } from './base64.js';
import { blindBatch, blindTransitBatch, type BatchResults, type BatchUnblinder, type BlindedBatch } from './blind.js';
import {
  CallError,
  Code,
  ErrBatchTooLarge,
  ErrMissingResult,
  ItemError,
  PseudonymizerError,
  parseDuration,
  readStatus,
  type StatusInfo,
  type StatusJSON,
} from './errors.js';
import { Transit } from './pseudonym.js';

/**
 * RetryPolicy says when and how a Client retries a call that failed as a
 * whole, and the items of a batch that the service refused with UNAVAILABLE
 * (see below). Every other per-item refusal is an answer, never retried.
 *
 * A call is retried only after UNAVAILABLE (the service, its key store or
 * the network cannot be reached: another replica, or the same one a little
 * later, may answer) or RESOURCE_EXHAUSTED with a RetryInfo (the caller's
 * rate limit: the service says when the same request passes).
 * RESOURCE_EXHAUSTED without RetryInfo (a request over a size limit) is not
 * retried, nor is any other code.
 *
 * Items refused with UNAVAILABLE (the service could not reach its key
 * store, or the key-share plugin of a split domain, for them) are sent
 * again in a call of their own, a round, after the same backoff: at most
 * maxRetries rounds, each taking a token from the budget like a retry (a
 * round's call is itself retried when it fails as a whole, as any call).
 * The other items keep their answers. When the rounds end (the limit, the
 * budget, the timeout or an abort, or a round's call failing), the items
 * still refused keep their UNAVAILABLE refusal, and the call resolves: its
 * first attempt was answered.
 *
 * Before retry n (from 0) the client waits a uniformly random time in [0,
 * min(maxDelayMs, baseDelayMs·2ⁿ)] ("full jitter"), and after
 * RESOURCE_EXHAUSTED at least the RetryInfo delay capped by
 * maxServerDelayMs. It never waits past the call's timeout: when the wait
 * would reach it, the call fails with its last error at once.
 *
 * Retries also draw on a budget shared by all calls of the Client: at most
 * budgetTokens tokens (it starts full), each call (not each attempt) adds
 * budgetRatio, each retry takes one; with less than one token left, calls
 * are not retried.
 */
export interface RetryPolicy {
  /** The most retries of one call after its first attempt; 0 disables retries. */
  maxRetries: number;
  /** The base of the exponential backoff, in milliseconds. */
  baseDelayMs: number;
  /** The cap of the exponential backoff, in milliseconds. */
  maxDelayMs: number;
  /** The cap of a delay the service asks for (RetryInfo); 0 ignores them. */
  maxServerDelayMs: number;
  /** The capacity of the retry budget; 0 or less disables the budget. */
  budgetTokens: number;
  /** The part of a token each call adds to the budget. */
  budgetRatio: number;
}

/** defaultRetryPolicy is Go's DefaultRetryPolicy: 3 retries, 100 ms to 5 s, server delays up to 30 s, 10 tokens, 0.1 per call. */
export function defaultRetryPolicy(): RetryPolicy {
  return { maxRetries: 3, baseDelayMs: 100, maxDelayMs: 5000, maxServerDelayMs: 30000, budgetTokens: 10, budgetRatio: 0.1 };
}

/** Options of a Client. */
export interface ClientOptions {
  /** The gateway's base URL, e.g. "https://pseudonymizer.example.org" (paths /pseudo/v1/... are appended). */
  baseUrl: string;
  /**
   * token returns the caller's OAuth2 access token, sent as "Authorization:
   * Bearer <token>"; it is called before every attempt, so it may refresh
   * the token. Undefined or "": no Authorization header.
   */
  token?: (signal: AbortSignal | undefined) => string | undefined | Promise<string | undefined>;
  /** Headers added to every request (e.g. X-Pseudonymizer-Principal for a development server). */
  headers?: Record<string, string>;
  /** The fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** The largest batch sent in one call (default 1000, the service's default); larger batches are split. */
  maxBatch?: number;
  /**
   * How long before exp a cached transit pseudonym stops being served, in
   * milliseconds (default 30000); 0 or less disables the cache. pseudonymize
   * caches its results per (domain, identifier), keyed by an HMAC under a
   * per-Client random key so that no identifier is kept as a map key, and
   * merges concurrent calls for the same value.
   */
  cacheMarginMs?: number;
  /** Changes to the retry policy (see RetryPolicy). */
  retry?: Partial<RetryPolicy>;
  /** The backoff's jitter, for tests: returns a value in [0, n). Default Math.random. */
  jitter?: (n: number) => number;
}

/** Options of one call. */
export interface CallOptions {
  /**
   * Aborts the call, its retries and its waits; the call rejects with the
   * signal's reason. Once a batch call was answered, an abort only ends the
   * retries of the items refused with UNAVAILABLE (see RetryPolicy): they
   * keep that refusal, and the other items their answers.
   */
  signal?: AbortSignal;
  /**
   * A deadline for the whole call, retries included, in milliseconds: past
   * it the call rejects with a TimeoutError DOMException, and a retry whose
   * wait would reach it is not made (the call fails with its last error;
   * items refused with UNAVAILABLE keep that refusal, as for signal).
   */
  timeoutMs?: number;
}

/** An operation a domain's policy may allow a caller. */
export type Operation = 'pseudonymize' | 'identify' | 'convert' | (string & {});

/** The public description of a domain, and what the caller may do with it. */
export interface DomainInfo {
  /** The domain's name, e.g. "prescriptions_v1". */
  name: string;
  /** The aud of the domain's transitInfo values. */
  audience: string;
  /** The lifetime of the transit pseudonyms the service makes, in milliseconds. */
  ttlMs: number;
  /** The transit key new transitInfo values are sealed under. */
  activeKid: string;
  /** The transit keys the domain accepts. */
  acceptedKids: string[];
  /** What this caller may do with the domain. */
  operations: Operation[];
  /** The domains this caller may convert into. */
  convertTargets: string[];
}

/** An identifier (normalized bytes) or a transit pseudonym given as an object or as its text form. */
export type TransitInput = Transit | string;

// One blinded item of a call, and the service's answer to one.
interface WireItem {
  id: string;
  blinded: Uint8Array;
  info: string;
}
interface Answer {
  id: string;
  error?: StatusJSON;
  point?: Uint8Array;
  info: string;
}

// A batch operation: what it blinds, where it goes, how it unblinds.
interface BatchOp<In, Out> {
  blind(items: readonly In[]): BlindedBatch;
  info(x: In): string;
  path: string;
  body(items: WireItem[]): unknown;
  answers(resp: unknown): Answer[];
  unblind(bu: BatchUnblinder, points: Uint8Array[], infos: string[]): BatchResults<Out>;
}

const evaluatedAnswers = (resp: unknown): Answer[] =>
  results(resp).map((r) => {
    const ev = (r.evaluated ?? undefined) as { point?: unknown; transitInfo?: unknown } | undefined;
    return {
      id: str(r.id),
      error: r.error as StatusJSON | undefined,
      point: bytesField(ev?.point),
      info: str(ev?.transitInfo),
    };
  });

function results(resp: unknown): Array<Record<string, unknown>> {
  const rs = (resp as { results?: unknown } | null)?.results;
  return Array.isArray(rs) ? rs.filter((r) => r && typeof r === 'object') : [];
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

// bytesField reads a proto3 JSON bytes field: undefined when absent or empty
// (proto3 cannot tell them apart), else the bytes (a value that is not
// base64 gives an empty array, which fails as an invalid point).
function bytesField(v: unknown): Uint8Array | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  return b64anyDecode(v) ?? new Uint8Array(0);
}

// The HTTP statuses of answers without a google.rpc.Status body (a proxy's),
// read back as gRPC codes.
function codeOfHTTP(status: number): number {
  switch (status) {
    case 400:
      return Code.INVALID_ARGUMENT;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.NOT_FOUND;
    case 409:
      return Code.ABORTED;
    case 412:
      return Code.FAILED_PRECONDITION;
    case 413:
    case 429:
      return Code.RESOURCE_EXHAUSTED;
    case 499:
      return Code.CANCELLED;
    case 501:
      return Code.UNIMPLEMENTED;
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
    default:
      return status >= 500 ? Code.INTERNAL : Code.UNKNOWN;
  }
}

function retryAfterMs(h: string | null): number | undefined {
  if (!h) return undefined;
  if (/^\d+$/.test(h.trim())) return Number(h.trim()) * 1000;
  const t = Date.parse(h);
  return Number.isNaN(t) ? undefined : Math.max(t - Date.now(), 0);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(ms, 0));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// A call's signal and deadline: the caller's signal, plus timeoutMs.
interface Scope {
  signal: AbortSignal | undefined;
  deadline: number | undefined; // Date.now() based
  done(): void;
}

function scope(opts: CallOptions | undefined): Scope {
  const parent = opts?.signal;
  if (opts?.timeoutMs === undefined) return { signal: parent, deadline: undefined, done() {} };
  const ctrl = new AbortController();
  const deadline = Date.now() + opts.timeoutMs;
  const onAbort = () => ctrl.abort(parent!.reason);
  if (parent?.aborted) ctrl.abort(parent.reason);
  else parent?.addEventListener('abort', onAbort, { once: true });
  const t = setTimeout(() => ctrl.abort(new DOMException('pseudonymizer: call timed out', 'TimeoutError')), Math.max(opts.timeoutMs, 0));
  return {
    signal: ctrl.signal,
    deadline,
    done() {
      clearTimeout(t);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

// The transit cache: transit pseudonyms until margin before their exp, and
// the calls in flight for them, keyed by HMAC-SHA256(key, domain || 0 || id).
class TransitCache {
  readonly #margin: number;
  readonly #key = globalThis.crypto.getRandomValues(new Uint8Array(32));
  readonly #m = new Map<string, { t: Transit; use: number }>();
  readonly flying = new Map<string, { p: Promise<Transit>; aborted: () => boolean }>();
  #puts = 0;

  constructor(margin: number) {
    this.#margin = margin;
  }

  key(domain: string, id: Uint8Array): string {
    const d = new TextEncoder().encode(domain);
    const msg = new Uint8Array(d.length + 1 + id.length);
    msg.set(d);
    msg.set(id, d.length + 1);
    return b64std(hmac(sha256, this.#key, msg));
  }

  get(k: string, now: number): Transit | undefined {
    const e = this.#m.get(k);
    if (!e) return undefined;
    if (now >= e.use) {
      this.#m.delete(k);
      return undefined;
    }
    return e.t;
  }

  put(k: string, t: Transit): void {
    let exp: number;
    try {
      exp = t.header().exp * 1000;
    } catch {
      return;
    }
    const use = exp - this.#margin;
    const now = Date.now();
    if (use <= now) return;
    this.#m.set(k, { t, use });
    if (++this.#puts % 1024 === 0) {
      for (const [key, e] of this.#m) if (now >= e.use) this.#m.delete(key);
    }
  }

  get size(): number {
    return this.#m.size;
  }
}

/** Client calls the pseudonymization service's REST gateway. Safe for concurrent use. */
export class Client {
  readonly #base: string;
  readonly #token: ClientOptions['token'];
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;
  #maxBatch: number;
  readonly #cache: TransitCache | undefined;
  readonly #retry: RetryPolicy;
  readonly #jitter: (n: number) => number;
  #tokens: number;

  constructor(opts: ClientOptions) {
    if (!opts || typeof opts.baseUrl !== 'string') throw new TypeError('pseudonymizer: ClientOptions.baseUrl is required');
    this.#base = opts.baseUrl.replace(/\/+$/, '');
    this.#token = opts.token;
    this.#headers = { ...(opts.headers ?? {}) };
    this.#fetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#maxBatch = opts.maxBatch && opts.maxBatch > 0 ? Math.floor(opts.maxBatch) : 1000;
    const margin = opts.cacheMarginMs ?? 30000;
    this.#cache = margin > 0 ? new TransitCache(margin) : undefined;
    this.#retry = { ...defaultRetryPolicy(), ...(opts.retry ?? {}) };
    this.#jitter = opts.jitter ?? ((n) => Math.floor(Math.random() * n));
    this.#tokens = this.#retry.budgetTokens;
  }

  /** The largest batch sent in one call (lowered when the service says its maximum is smaller). */
  get maxBatch(): number {
    return this.#maxBatch;
  }

  /** The number of transit pseudonyms in the cache (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache?.size ?? 0;
  }

  /**
   * pseudonymize returns a pseudonym in transit of the identifier id (1 to
   * 29 bytes, normalized with niss() or raw()) in domain, to forward to the
   * domain's owner. With the cache on (the default), a value pseudonymized
   * recently is served from memory, and concurrent calls for the same value
   * share one service call. Rejects with a CallError for the call, or the
   * item's own error (an ItemError for a refusal of the service).
   */
  async pseudonymize(domain: string, id: Uint8Array, opts?: CallOptions): Promise<Transit> {
    const one = async (): Promise<Transit> => {
      const r = await this.pseudonymizeBatch(domain, [id], opts);
      if (r.errors[0]) throw r.errors[0];
      return r.results[0]!;
    };
    const cache = this.#cache;
    if (!cache) return one();
    const k = cache.key(domain, id);
    const hit = cache.get(k, Date.now());
    if (hit) return hit;
    const f = cache.flying.get(k);
    if (!f) {
      const p = one();
      const flight = { p, aborted: () => opts?.signal?.aborted === true };
      cache.flying.set(k, flight);
      try {
        return await p;
      } finally {
        if (cache.flying.get(k) === flight) cache.flying.delete(k);
      }
    }
    try {
      return await withSignal(f.p, opts?.signal);
    } catch (e) {
      // The leader gave up (its signal or timeout), not the service: try ourselves.
      const leaderQuit = f.aborted() || (e instanceof DOMException && (e.name === 'AbortError' || e.name === 'TimeoutError'));
      if (leaderQuit && !opts?.signal?.aborted) return one();
      throw e;
    }
  }

  /**
   * pseudonymizeBatch pseudonymizes many identifiers. It rejects with a
   * CallError when a call fails as a whole (permission, quota, network);
   * otherwise errors[i] is item i's own error. Batches over the maximum size
   * are split into several calls.
   */
  async pseudonymizeBatch(domain: string, ids: readonly Uint8Array[], opts?: CallOptions): Promise<BatchResults<Transit>> {
    const n = ids.length;
    const out: BatchResults<Transit> = { results: new Array(n).fill(undefined), errors: new Array(n).fill(undefined) };
    const cache = this.#cache;
    const keys = cache ? ids.map((id) => cache.key(domain, id)) : [];
    const todo: number[] = [];
    const now = Date.now();
    ids.forEach((_, i) => {
      const hit = cache?.get(keys[i]!, now);
      if (hit) out.results[i] = hit;
      else todo.push(i);
    });
    const sub = await this.#batch(this.#pseudonymizeOp(domain), todo.map((i) => ids[i]!), opts, (j, t) => {
      if (cache) cache.put(keys[todo[j]!]!, t);
    });
    todo.forEach((i, j) => {
      out.results[i] = sub.results[j];
      out.errors[i] = sub.errors[j];
    });
    return out;
  }

  /**
   * identify returns the identifier behind a pseudonym in transit that an
   * owner sent (an object, or its text form). It fails if the pseudonym
   * expired or is bound to another caller, or if the policy does not let
   * this caller identify.
   */
  async identify(domain: string, t: TransitInput, opts?: CallOptions): Promise<Uint8Array> {
    const r = await this.identifyBatch(domain, [t], opts);
    if (r.errors[0]) throw r.errors[0];
    return r.results[0]!;
  }

  /** identifyBatch identifies many transit pseudonyms of one domain; errors as for pseudonymizeBatch. */
  async identifyBatch(domain: string, ts: readonly TransitInput[], opts?: CallOptions): Promise<BatchResults<Uint8Array>> {
    return this.#withParsed(ts, (parsed) => this.#batch(this.#identifyOp(domain), parsed, opts));
  }

  /**
   * convert turns a pseudonym in transit of domain from into one of domain
   * to, for an owner of from that talks to an owner of to (the caller must
   * be allowed to convert from → to).
   */
  async convert(from: string, to: string, t: TransitInput, opts?: CallOptions): Promise<Transit> {
    const r = await this.convertBatch(from, to, [t], opts);
    if (r.errors[0]) throw r.errors[0];
    return r.results[0]!;
  }

  /** convertBatch converts many transit pseudonyms from one domain to another; errors as for pseudonymizeBatch. */
  async convertBatch(from: string, to: string, ts: readonly TransitInput[], opts?: CallOptions): Promise<BatchResults<Transit>> {
    return this.#withParsed(ts, (parsed) => this.#batch(this.#convertOp(from, to), parsed, opts));
  }

  /** domain returns the public description of a domain and what the caller may do with it. */
  async domain(name: string, opts?: CallOptions): Promise<DomainInfo> {
    const sc = scope(opts);
    try {
      const r = (await this.#call(sc, () => this.#send('GET', `/pseudo/v1/domains/${encodeURIComponent(name)}`, undefined, sc.signal))) as Record<string, unknown>;
      const strs = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
      const opNames = ['unspecified', 'pseudonymize', 'identify', 'convert'];
      const ops = Array.isArray(r.allowedOperations) ? r.allowedOperations : [];
      return {
        name: str(r.name),
        audience: str(r.audience),
        ttlMs: parseDuration(r.ttl) ?? 0,
        activeKid: str(r.activeKid),
        acceptedKids: strs(r.acceptedKids),
        operations: ops.map((op) =>
          typeof op === 'number' ? (opNames[op] ?? `operation_${op}`) : String(op).replace(/^OPERATION_/, '').toLowerCase(),
        ),
        convertTargets: strs(r.convertTargets),
      };
    } finally {
      sc.done();
    }
  }

  // withParsed parses the text forms among ts; one that does not parse gets
  // its own error and is not sent.
  async #withParsed<Out>(ts: readonly TransitInput[], run: (parsed: Transit[]) => Promise<BatchResults<Out>>): Promise<BatchResults<Out>> {
    const bad: Array<PseudonymizerError | undefined> = [];
    const parsed: Transit[] = [];
    const idx: number[] = [];
    ts.forEach((t, i) => {
      try {
        parsed.push(typeof t === 'string' ? Transit.parse(t) : t);
        idx.push(i);
      } catch (e) {
        if (!(e instanceof PseudonymizerError)) throw e;
        bad[i] = e;
      }
    });
    if (idx.length === ts.length) return run(parsed);
    const sub = await run(parsed);
    const out: BatchResults<Out> = { results: new Array(ts.length).fill(undefined), errors: new Array(ts.length).fill(undefined) };
    bad.forEach((e, i) => {
      out.errors[i] = e;
    });
    idx.forEach((i, j) => {
      out.results[i] = sub.results[j];
      out.errors[i] = sub.errors[j];
    });
    return out;
  }

  // batch runs op over inputs, in calls of at most maxBatch items, and gives
  // item i's result or error. A call error stops it and is thrown (ok has
  // seen the results of the calls before it). When the service says its
  // maximum batch size is below maxBatch, the batch is split again at it.
  async #batch<In, Out>(op: BatchOp<In, Out>, inputs: readonly In[], opts: CallOptions | undefined,
    ok?: (i: number, r: Out) => void): Promise<BatchResults<Out>> {
    const n = inputs.length;
    const out: BatchResults<Out> = { results: new Array(n).fill(undefined), errors: new Array(n).fill(undefined) };
    if (n === 0) return out;
    const sc = scope(opts);
    try {
      for (let lo = 0; lo < n; ) {
        const size = this.#maxBatch;
        const hi = Math.min(lo + size, n);
        const chunk = inputs.slice(lo, hi);
        const { blinded, unblinder, errors: berrs } = op.blind(chunk);
        const items: WireItem[] = [];
        blinded.forEach((b, i) => {
          if (b) items.push({ id: String(i), blinded: b, info: op.info(chunk[i]!) });
        });
        let answers: Answer[] = [];
        if (items.length > 0) {
          try {
            answers = await this.#sendItems(sc, op, items);
          } catch (e) {
            const max = Number(e instanceof CallError && e.is(ErrBatchTooLarge) ? e.metadata.max_batch_size : NaN);
            if (Number.isInteger(max) && max > 0 && max < size) {
              this.#maxBatch = max;
              continue; // split again at the service's maximum
            }
            throw e;
          }
        }
        const r = readAnswers(answers, unblinder, berrs, op.unblind);
        for (let i = 0; i < chunk.length; i++) {
          out.results[lo + i] = r.results[i];
          out.errors[lo + i] = r.errors[i];
          if (ok && r.results[i] !== undefined && !r.errors[i]) ok(lo + i, r.results[i]!);
        }
        lo = hi;
      }
      return out;
    } finally {
      sc.done();
    }
  }

  // sendItems makes one call of items and returns the service's answers.
  // The call is retried as a whole when it fails (call); then the items the
  // service refused with UNAVAILABLE (its key store, or the key-share plugin
  // of a split domain, out of reach for a moment) are sent again, alone, in
  // rounds under the same RetryPolicy: its backoff, at most maxRetries
  // rounds, a budget token each (retryWait; a round's call is retried as a
  // whole as any call, but adds nothing to the budget). When the rounds end
  // (the limit, the budget, the deadline or an abort, or one failing as a
  // whole), an item still
  // refused keeps its last UNAVAILABLE refusal, every other item keeps its
  // answer, and nothing is thrown: only the first call's failure is. The
  // same blinded points are sent again: the service learns nothing from a
  // retry that it did not from the first call. Go: (*Client).send.
  async #sendItems<In, Out>(sc: Scope, op: BatchOp<In, Out>, items: WireItem[]): Promise<Answer[]> {
    const final: Answer[] = [];
    let refused = new Map<string, Answer>(); // of the items sent again, by id
    for (let attempt = 0; ; attempt++) {
      const body = op.body(items);
      let got: Answer[];
      try {
        got = op.answers(await this.#call(sc, () => this.#send('POST', op.path, body, sc.signal), attempt === 0));
      } catch (e) {
        if (attempt === 0) throw e;
        return [...final, ...refused.values()];
      }
      // Only the first answer for an item sent in this call counts, as in
      // readAnswers; an item sent again that gets none keeps its refusal.
      const pending = new Map(items.map((it) => [it.id, it]));
      const again: WireItem[] = [];
      const now = new Map<string, Answer>();
      for (const a of got) {
        const it = pending.get(a.id);
        if (!it) continue;
        pending.delete(a.id);
        if (a.error && readStatus(a.error).code === Code.UNAVAILABLE) {
          again.push(it);
          now.set(a.id, a);
          continue;
        }
        final.push(a);
      }
      for (const id of pending.keys()) {
        const a = refused.get(id);
        if (a) final.push(a);
      }
      refused = now;
      if (again.length === 0) return final;
      const wait = this.#retryWait(sc, readStatus(now.get(again[0]!.id)!.error), attempt);
      if (wait === undefined) return [...final, ...refused.values()];
      try {
        await sleep(wait, sc.signal);
      } catch {
        return [...final, ...refused.values()];
      }
      items = again;
    }
  }

  #pseudonymizeOp(domain: string): BatchOp<Uint8Array, Transit> {
    return {
      blind: (ids) => blindBatch(ids),
      info: () => '',
      path: `/pseudo/v1/domains/${encodeURIComponent(domain)}/pseudonymize`,
      body: (items) => ({ items: items.map((it) => ({ id: it.id, blinded: b64std(it.blinded) })) }),
      answers: evaluatedAnswers,
      unblind: (bu, points, infos) => bu.unblindBatch(points, infos),
    };
  }

  #identifyOp(domain: string): BatchOp<Transit, Uint8Array> {
    return {
      blind: (ts) => blindTransitBatch(ts),
      info: (t) => t.info,
      path: `/pseudo/v1/domains/${encodeURIComponent(domain)}/identify`,
      body: (items) => ({ items: items.map((it) => ({ id: it.id, blinded: b64std(it.blinded), transitInfo: it.info })) }),
      answers: (resp) => results(resp).map((r) => ({ id: str(r.id), error: r.error as StatusJSON | undefined, point: bytesField(r.point), info: '' })),
      unblind: (bu, points) => bu.identifyBatch(points),
    };
  }

  #convertOp(from: string, to: string): BatchOp<Transit, Transit> {
    return {
      blind: (ts) => blindTransitBatch(ts),
      info: (t) => t.info,
      path: `/pseudo/v1/domains/${encodeURIComponent(from)}/convertTo/${encodeURIComponent(to)}`,
      body: (items) => ({ items: items.map((it) => ({ id: it.id, blinded: b64std(it.blinded), transitInfo: it.info })) }),
      answers: evaluatedAnswers,
      unblind: (bu, points, infos) => bu.unblindBatch(points, infos),
    };
  }

  // send makes one HTTP request and returns its JSON body, or throws a
  // CallError (the status the service sent, or one made from the HTTP status
  // or the network failure) or the signal's reason.
  async #send(method: string, path: string, body: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.#headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const token = this.#token ? await this.#token(signal) : undefined;
    if (token) headers.authorization = `Bearer ${token}`;
    signal?.throwIfAborted();
    let resp: Response;
    try {
      resp = await this.#fetch(this.#base + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: signal ?? null,
      });
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      throw new CallError(
        { code: Code.UNAVAILABLE, message: 'the gateway cannot be reached', reason: '', metadata: {}, retryDelayMs: undefined },
        0,
        { cause: e },
      );
    }
    let text: string;
    try {
      text = await resp.text();
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      throw new CallError({ code: Code.UNAVAILABLE, message: 'reading the answer failed', reason: '', metadata: {}, retryDelayMs: undefined }, resp.status, { cause: e });
    }
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (resp.ok) {
      if (json === undefined || typeof json !== 'object' || json === null) {
        throw new CallError({ code: Code.INTERNAL, message: 'the gateway sent an answer that is not JSON', reason: '', metadata: {}, retryDelayMs: undefined }, resp.status);
      }
      return json;
    }
    let s: StatusInfo;
    if (json && typeof json === 'object' && typeof (json as StatusJSON).code === 'number') {
      s = readStatus(json as StatusJSON);
    } else {
      s = { code: codeOfHTTP(resp.status), message: `HTTP ${resp.status}`, reason: '', metadata: {}, retryDelayMs: undefined };
    }
    if (s.retryDelayMs === undefined && s.code === Code.RESOURCE_EXHAUSTED) {
      s.retryDelayMs = retryAfterMs(resp.headers.get('retry-after'));
    }
    throw new CallError(s, resp.status);
  }

  // call runs f, retrying as the RetryPolicy says. A round of sendItems
  // (earn false) is no call of its own: it adds nothing to the budget.
  async #call<T>(sc: Scope, f: () => Promise<T>, earn = true): Promise<T> {
    const p = this.#retry;
    if (earn && p.budgetTokens > 0) this.#tokens = Math.min(this.#tokens + Math.max(p.budgetRatio, 0), p.budgetTokens);
    for (let attempt = 0; ; attempt++) {
      try {
        return await f();
      } catch (e) {
        if (!(e instanceof CallError)) throw e;
        const wait = this.#retryWait(sc, e, attempt);
        if (wait === undefined) throw e;
        await sleep(wait, sc.signal);
      }
    }
  }

  // retryWait decides whether a call that failed with e (a call's error, or
  // an item's UNAVAILABLE refusal) after attempt retries (from 0) is retried,
  // and after how long. It takes a token from the budget when it says yes.
  #retryWait(sc: Scope, e: Pick<StatusInfo, 'code' | 'retryDelayMs'>, attempt: number): number | undefined {
    const p = this.#retry;
    if (attempt >= p.maxRetries || sc.signal?.aborted) return undefined;
    let floor = 0;
    if (e.code === Code.RESOURCE_EXHAUSTED) {
      if (e.retryDelayMs === undefined) return undefined;
      floor = Math.max(Math.min(e.retryDelayMs, p.maxServerDelayMs), 0);
    } else if (e.code !== Code.UNAVAILABLE) {
      return undefined;
    }
    const wait = Math.max(this.#backoff(attempt), floor);
    if (sc.deadline !== undefined && Date.now() + wait >= sc.deadline) return undefined;
    if (p.budgetTokens > 0) {
      if (this.#tokens < 1) return undefined;
      this.#tokens--;
    }
    return wait;
  }

  #backoff(n: number): number {
    const p = this.#retry;
    if (p.baseDelayMs <= 0) return 0;
    const ceil = Math.min(p.baseDelayMs * 2 ** Math.min(n, 52), p.maxDelayMs);
    if (ceil <= 0) return 0;
    return Math.min(Math.max(this.#jitter(Math.floor(ceil) + 1), 0), ceil);
  }
}

// readAnswers reads one call's answers into one result or error per item:
// an item keeps its blinding error or the service's refusal, gets
// ErrMissingResult when the service sent no point for it, and else its
// unblinded result or error. An answer for an item that was not sent, with
// an unknown id, or after the first for an item, is ignored.
function readAnswers<Out>(answers: Answer[], bu: BatchUnblinder, berrs: Array<PseudonymizerError | undefined>,
  unblind: (bu: BatchUnblinder, points: Uint8Array[], infos: string[]) => BatchResults<Out>): BatchResults<Out> {
  const n = bu.length;
  const errs = [...berrs];
  const points: Array<Uint8Array | undefined> = new Array(n).fill(undefined);
  const infos: string[] = new Array(n).fill('');
  const seen = new Array<boolean>(n).fill(false);
  for (const a of answers) {
    if (!/^(0|[1-9][0-9]*)$/.test(a.id)) continue;
    const i = Number(a.id);
    if (i >= n || errs[i] || seen[i]) continue;
    seen[i] = true;
    if (a.error) errs[i] = new ItemError(readStatus(a.error));
    else {
      points[i] = a.point;
      infos[i] = a.info;
    }
  }
  const r = unblind(bu, points.map((p) => p ?? new Uint8Array(0)), infos);
  const out: BatchResults<Out> = { results: new Array(n).fill(undefined), errors: new Array(n).fill(undefined) };
  for (let i = 0; i < n; i++) {
    if (errs[i]) out.errors[i] = errs[i];
    else if (points[i] === undefined) out.errors[i] = new PseudonymizerError(ErrMissingResult);
    else {
      out.results[i] = r.results[i];
      out.errors[i] = r.errors[i];
    }
  }
  return out;
}

function withSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

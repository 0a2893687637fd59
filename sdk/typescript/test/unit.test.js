// Unit tests of the SDK: identifiers, base64, the transitInfo header read,
// text forms, errors, blinding, and the Client's batching, retries, cache
// and abort handling against an in-memory service (a fetch function that
// evaluates with a real scalar). The real server is exercised by
// test/integration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AtRest,
  CallError,
  Client,
  Code,
  ErrBatchTooLarge,
  ErrEmptyIdentifier,
  ErrExpired,
  ErrIdentifierTooLong,
  ErrIdentity,
  ErrInvalidNISS,
  ErrInvalidPoint,
  ErrMalformedText,
  ErrMalformedTransitInfo,
  ErrMissingResult,
  ErrMissingTransitInfo,
  ErrNonCanonical,
  ErrNotIdentifier,
  ErrOperationNotAllowed,
  ErrPointLength,
  ErrRateLimited,
  ErrSameDomain,
  ErrUnknownKind,
  ErrKeyStoreUnavailable,
  ItemError,
  MAX_LEN,
  ORDER,
  PseudonymizerError,
  Transit,
  b64anyDecode,
  b64std,
  b64url,
  b64urlDecode,
  blind,
  blindBatch,
  blindTransit,
  decodePoint,
  encodeIdentifier,
  formatNISS,
  isError,
  matchStatus,
  niss,
  normalize,
  parseHeader,
  randomScalar,
  raw,
  statusTable,
} from '../dist/index.js';

const L = ORDER;
const modinv = (x) => { let r = 1n, b = x % L, e = L - 2n; while (e) { if (e & 1n) r = (r * b) % L; b = (b * b) % L; e >>= 1n; } return r; };
const utf8 = (s) => new TextEncoder().encode(s);
const text = (b) => new TextDecoder().decode(b);

function throwsKind(fn, kind) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof PseudonymizerError, `not a PseudonymizerError: ${e}`);
    assert.ok(e.is(kind), `${e.kind?.name} is not ${kind.name}`);
    return true;
  });
}

// A transitInfo of the service's shape (not sealed under any key: the client cannot tell).
function fakeInfo(header = {}) {
  const h = { alg: 'dir', enc: 'A256GCM', kid: 't1', aud: 'urn:x', iat: 1000, exp: 1300, ...header };
  return `${b64url(utf8(JSON.stringify(h)))}..${'A'.repeat(16)}.${'B'.repeat(75)}.${'C'.repeat(22)}`;
}
const headerPart = (json) => b64url(utf8(json));
const withHeader = (json) => `${headerPart(json)}..AAAAAAAAAAAAAAAA.BBBB.CCCCCCCCCCCCCCCCCCCCCA`;

test('NISS: normalization, check digits (both centuries), BIS months, refusals that never quote the value', () => {
  for (const [inp, want] of [
    ['85.07.30-033.28', '85073003328'],
    ['85073003328', '85073003328'],
    [' 850730 033 28 ', '85073003328'],
    ['85/07/30-033-28', '85073003328'],
    ['00010100105', '00010100105'],
    ['00.01.01-001.05', '00010100105'],
    ['85270100103', '85270100103'],
  ]) {
    assert.equal(text(niss(inp)), want, inp);
  }
  for (const bad of ['', '8507300332', '850730033280', '85073003327', '85.07.30-033.2X', '85a73003328', '85130100103', '1'.repeat(40), '８5073003328', '85530100103']) {
    assert.throws(() => niss(bad), (e) => e.is(ErrInvalidNISS) && (bad === '' || !e.message.includes(bad)), bad);
  }
  assert.equal(text(normalize('niss', '85.07.30-033.28')), '85073003328');
  assert.equal(text(normalize('raw', 'x')), 'x');
  throwsKind(() => normalize('ssn', 'x'), ErrUnknownKind);
  assert.equal(formatNISS(utf8('85073003328')), '85.07.30-033.28');
  assert.equal(formatNISS(utf8('abc')), 'abc');
  const r = utf8('opaque');
  const c = raw(r);
  r[0] = 0;
  assert.equal(text(c), 'opaque', 'raw copies its input');
  throwsKind(() => raw(''), ErrEmptyIdentifier);
  throwsKind(() => raw(new Uint8Array(MAX_LEN + 1)), ErrIdentifierTooLong);
  assert.equal(raw(new Uint8Array(MAX_LEN)).length, 29);
});

test('base64: strict base64url (no padding, no other characters, zero unused bits) and the proto JSON form', () => {
  const b = new Uint8Array([0xfb, 0xff, 0x00, 0x01]);
  assert.equal(b64url(b), '-_8AAQ');
  assert.deepEqual(b64urlDecode('-_8AAQ'), b);
  for (const bad of ['-_8AAQ==', '-_8AAR', '-_8A AQ', '-_8A\nAQ', '+/8AAQ', 'A']) assert.equal(b64urlDecode(bad), undefined, bad);
  assert.equal(b64std(b), '+/8AAQ==');
  assert.deepEqual(b64anyDecode('+/8AAQ=='), b);
  assert.deepEqual(b64anyDecode('-_8AAQ'), b);
  assert.equal(b64urlDecode('').length, 0);
});

test('points: length, canonical, identity; identifiers embedded and read back', () => {
  throwsKind(() => decodePoint(new Uint8Array(31)), ErrPointLength);
  throwsKind(() => decodePoint(new Uint8Array(32)), ErrIdentity);
  throwsKind(() => decodePoint(new Uint8Array(32).fill(0xff)), ErrNonCanonical);
  throwsKind(() => decodePoint(new Uint8Array(32).fill(0xff)), ErrInvalidPoint);
  throwsKind(() => encodeIdentifier(new Uint8Array(0)), ErrEmptyIdentifier);
  throwsKind(() => encodeIdentifier(new Uint8Array(30)), ErrIdentifierTooLong);
  // b'⁻¹·(b·M) for an unrelated b' embeds no identifier (but with negligible probability).
  const { blinded } = blind(utf8('x'));
  throwsKind(() => blind(utf8('y')).unblinder.identify(blinded), ErrNotIdentifier);
});

test('blind/unblind: round trip through a simulated service, redaction, errors', () => {
  const k = randomScalar();
  const s = randomScalar();
  const id = utf8('85073003328');
  const { blinded, unblinder } = blind(id);
  const Y = decodePoint(blinded).multiply((s * k) % ORDER);
  const t = unblinder.unblind(Y.toBytes(), fakeInfo());
  assert.equal(t.toString().length, 44 + fakeInfo().length);
  // Identify: Y' = (s·k)⁻¹·(b'·P_T) unblinds to M.
  const bt = blindTransit(t);
  const Y2 = decodePoint(bt.blinded).multiply(modinv((s * k) % ORDER));
  assert.deepEqual(bt.unblinder.identify(Y2.toBytes()), id);
  assert.equal(`${unblinder}`, 'Unblinder(redacted)');
  assert.equal(JSON.stringify(unblinder), '"Unblinder(redacted)"');
  assert.ok(!Object.keys(unblinder).length, 'no enumerable field');
  throwsKind(() => unblinder.unblind(Y.toBytes(), ''), ErrMissingTransitInfo);
  throwsKind(() => unblinder.unblind(Y.toBytes(), 'a.b.c'), ErrMalformedTransitInfo);
  throwsKind(() => unblinder.unblind(new Uint8Array(32), fakeInfo()), ErrIdentity);
  throwsKind(() => blindTransit(undefined), ErrInvalidPoint);
  const bb = blindBatch([id, new Uint8Array(30)]);
  assert.equal(bb.errors[1].kind, ErrIdentifierTooLong);
  const lm = bb.unblinder.unblindBatch([Y.toBytes()], [fakeInfo(), fakeInfo()]);
  assert.ok(lm.errors.every((e) => e.kind.name === 'ErrLengthMismatch'));
});

test('transitInfo header: exactly the members of the protocol, strict JSON', () => {
  const h = parseHeader(fakeInfo({ sub: 'dr' }));
  assert.deepEqual({ ...h }, { kid: 't1', aud: 'urn:x', iat: 1000, exp: 1300, sub: 'dr' });
  const ok = [
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2}',
    ' { "exp" : 2 , "iat":-1,"aud":"a","kid":"t\\u0031","enc":"A256GCM","alg":"dir" } ',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":0,"exp":9223372036854775807}',
  ];
  for (const j of ok) assert.doesNotThrow(() => parseHeader(withHeader(j)), j);
  const bad = [
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2,"typ":"JWE"}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2,"cty":"x"}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2,"sub":""}',
    '{"alg":"dir","enc":"A256GCM","kid":"","aud":"a","iat":1,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1.0,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":01,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1e3,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":9223372036854775808}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2,"exp":2}',
    '{"alg":"RSA-OAEP","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2}',
    '{"alg":"dir","enc":"A128GCM","kid":"t1","aud":"a","iat":1,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2} x',
    '{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":"1","exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t\u0001","aud":"a","iat":1,"exp":2}',
    '{"alg":"dir","enc":"A256GCM","kid":"t\\x","aud":"a","iat":1,"exp":2}',
    '{}',
    '[]',
  ];
  for (const j of bad) throwsKind(() => parseHeader(withHeader(j)), ErrMalformedTransitInfo);
  const good = fakeInfo();
  for (const ti of [good + '.', good.replace('..', '.x.'), good.slice(0, 10) + '\n' + good.slice(10), 'a'.repeat(4097), `${headerPart('{}')}=..a.b.c`]) {
    throwsKind(() => parseHeader(ti), ErrMalformedTransitInfo);
  }
});

test('text forms: Transit and AtRest parse back, and refuse anything else', () => {
  const { blinded } = blind(utf8('85073003328'));
  const at = new AtRest(blinded);
  const s = at.toString();
  assert.equal(s.length, 43);
  assert.deepEqual(AtRest.parse(s).bytes, blinded);
  for (const bad of ['', s.slice(0, 42), s + 'A', 'A'.repeat(43), '_'.repeat(43), s.slice(0, 42) + '+']) {
    throwsKind(() => AtRest.parse(bad), ErrMalformedText);
  }
  const info = fakeInfo({ sub: 'dr' });
  const t = Transit.parse(`${s}:${info}`);
  assert.equal(t.toString(), `${s}:${info}`);
  assert.equal(JSON.stringify({ t }), JSON.stringify({ t: `${s}:${info}` }));
  assert.equal(t.expiry().getTime(), 1300_000);
  assert.equal(t.subject(), 'dr');
  for (const bad of ['', s, s + ':', s + ':a.b.c', 'A'.repeat(43) + ':' + info, s + ';' + info, s + ':' + 'x'.repeat(4097)]) {
    throwsKind(() => Transit.parse(bad), ErrMalformedText);
  }
});

test('errors: the protoerr table by reason, code and message; isError like errors.Is', () => {
  assert.equal(statusTable.length, 21);
  assert.equal(matchStatus(Code.FAILED_PRECONDITION, 'ERROR_REASON_EXPIRED', 'whatever'), ErrExpired);
  assert.equal(matchStatus(Code.INVALID_ARGUMENT, 'ERROR_REASON_UNSPECIFIED', 'from_domain and to_domain are the same'), ErrSameDomain);
  assert.equal(matchStatus(Code.INVALID_ARGUMENT, '', 'other'), undefined, 'two rows share INVALID_ARGUMENT');
  assert.equal(matchStatus(Code.UNAVAILABLE, '', 'proxy down'), ErrKeyStoreUnavailable);
  assert.equal(matchStatus(Code.OK, 'ERROR_REASON_NEW_ONE', ''), undefined);
  const e = new ItemError({ code: Code.FAILED_PRECONDITION, message: 'transitInfo has expired', reason: 'ERROR_REASON_EXPIRED', metadata: {}, retryDelayMs: undefined });
  assert.ok(isError(e, ErrExpired));
  assert.ok(!isError(e, ErrInvalidPoint));
  assert.equal(e.message, 'client: item refused: FAILED_PRECONDITION (ERROR_REASON_EXPIRED)');
  const ok = new ItemError({ code: Code.OK, message: '', reason: '', metadata: {}, retryDelayMs: undefined });
  assert.equal(ok.code, Code.UNKNOWN, 'a refusal never says OK');
  assert.ok(isError(new PseudonymizerError(ErrIdentity), ErrInvalidPoint), 'ErrIdentity wraps ErrInvalidPoint');
  assert.ok(!isError(new Error('x'), ErrInvalidPoint));
});

// ---- The Client against an in-memory service --------------------------------


// fakeService returns a fetch that answers like the gateway: pseudonymize
// evaluates (s·k)·B with a transitInfo whose header carries s in its kid
// (so identify can undo it), identify (s·k)⁻¹·B. hooks may answer first.
function fakeService({ maxBatch = 1000, exp = Math.floor(Date.now() / 1000) + 300, hook } = {}) {
  const k = randomScalar();
  const calls = [];
  const fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const body = init.body ? JSON.parse(init.body) : undefined;
    const call = { path, body, headers: init.headers, n: calls.length };
    calls.push(call);
    init.signal?.throwIfAborted();
    if (hook) {
      const r = await hook(call, init);
      if (r) return r;
    }
    const json = (status, v, headers = {}) => new Response(JSON.stringify(v), { status, headers: { 'content-type': 'application/json', ...headers } });
    if (body && body.items.length > maxBatch) {
      return json(400, { code: 3, message: `too many items: the maximum batch size is ${maxBatch}`, details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'ERROR_REASON_BATCH_TOO_LARGE', domain: 'pseudonymizer.v1', metadata: { max_batch_size: String(maxBatch) } }] });
    }
    if (path.endsWith('/pseudonymize')) {
      return json(200, {
        results: body.items.map((it) => {
          const s = randomScalar();
          const Y = decodePoint(b64anyDecode(it.blinded)).multiply((s * k) % L);
          return { id: it.id, evaluated: { point: b64std(Y.toBytes()), transitInfo: fakeInfo({ kid: 's' + s.toString(36), exp }) } };
        }),
      });
    }
    if (path.endsWith('/identify')) {
      return json(200, {
        results: body.items.map((it) => {
          const h = parseHeader(it.transitInfo);
          if (h.exp < Date.now() / 1000) {
            return { id: it.id, error: { code: 9, message: 'transitInfo has expired', details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'ERROR_REASON_EXPIRED', domain: 'pseudonymizer.v1' }] } };
          }
          const s = bigFrom36(h.kid.slice(1));
          const Y = decodePoint(b64anyDecode(it.blinded)).multiply(modinv((s * k) % L));
          return { id: it.id, point: b64std(Y.toBytes()) };
        }),
      });
    }
    if (path.startsWith('/pseudo/v1/domains/') && init.method === 'GET') {
      return json(200, { name: 'demo_v1', audience: 'urn:x', ttl: '300s', activeKid: 't1', acceptedKids: ['t1'], allowedOperations: ['OPERATION_PSEUDONYMIZE', 'OPERATION_IDENTIFY'], convertTargets: [] });
    }
    return json(404, { code: 5, message: 'no such route' });
  };
  return { fetch, calls };
}

function bigFrom36(s) {
  let n = 0n;
  for (const c of s) n = n * 36n + BigInt(parseInt(c, 36));
  return n;
}

const statusJSON = (code, message, reason, extra = []) => ({
  code,
  message,
  details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason, domain: 'pseudonymizer.v1', metadata: {} }, ...extra],
});
const respond = (status, v, headers = {}) => new Response(JSON.stringify(v), { status, headers: { 'content-type': 'application/json', ...headers } });

test('client: pseudonymize → identify round trip, headers, bearer token per attempt, domain()', async () => {
  const svc = fakeService();
  let tokens = 0;
  const c = new Client({ baseUrl: 'http://gw.test/', fetch: svc.fetch, token: () => `tok${++tokens}`, headers: { 'X-Pseudonymizer-Principal': 'dr' } });
  const t = await c.pseudonymize('demo_v1', niss('85.07.30-033.28'));
  assert.ok(t instanceof Transit);
  assert.equal(text(await c.identify('demo_v1', t.toString())), '85073003328');
  assert.equal(svc.calls[0].path, '/pseudo/v1/domains/demo_v1/pseudonymize');
  assert.deepEqual(Object.keys(svc.calls[0].body.items[0]).sort(), ['blinded', 'id']);
  assert.deepEqual(Object.keys(svc.calls[1].body.items[0]).sort(), ['blinded', 'id', 'transitInfo']);
  assert.equal(svc.calls[0].headers.authorization, 'Bearer tok1');
  assert.equal(svc.calls[1].headers.authorization, 'Bearer tok2');
  assert.equal(svc.calls[0].headers['X-Pseudonymizer-Principal'], 'dr');
  assert.equal(svc.calls[0].headers['content-type'], 'application/json');
  const d = await c.domain('demo_v1');
  assert.deepEqual(d, { name: 'demo_v1', audience: 'urn:x', ttlMs: 300000, activeKid: 't1', acceptedKids: ['t1'], operations: ['pseudonymize', 'identify'], convertTargets: [] });
});

test('client: batches split at maxBatch and again at the service maximum; per-item errors stay per item', async () => {
  const svc = fakeService({ maxBatch: 3 });
  const c = new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch, maxBatch: 5, cacheMarginMs: 0 });
  const ids = Array.from({ length: 8 }, (_, i) => utf8('id' + i));
  ids[4] = new Uint8Array(0); // fails to blind: not sent
  const r = await c.pseudonymizeBatch('demo_v1', ids);
  assert.equal(c.maxBatch, 3, 'lowered to the service maximum');
  assert.ok(r.errors[4].is(ErrEmptyIdentifier));
  assert.equal(r.results[4], undefined);
  for (const i of [0, 1, 2, 3, 5, 6, 7]) assert.ok(r.results[i] instanceof Transit, `item ${i}`);
  const sizes = svc.calls.map((c) => c.body.items.length);
  assert.deepEqual(sizes, [4, 3, 2, 2], 'one refused call of 4 (5 minus the empty id), then chunks of 3 (less the empty id)');
  // Identify: an expired one and a malformed text fail alone.
  const expired = new Transit(r.results[0].point, fakeInfo({ exp: 1000 }));
  const id = await c.identifyBatch('demo_v1', [r.results[0], 'garbage', expired, r.results[7].toString()]);
  assert.equal(text(id.results[0]), 'id0');
  assert.ok(id.errors[1].is(ErrMalformedText));
  assert.ok(id.errors[2] instanceof ItemError && id.errors[2].is(ErrExpired) && id.errors[2].code === Code.FAILED_PRECONDITION);
  assert.equal(text(id.results[3]), 'id7');
  await assert.rejects(c.identify('demo_v1', expired), (e) => isError(e, ErrExpired));
});

test('client: missing, duplicate and unknown answers', async () => {
  const svc = fakeService({
    hook: async (call) => {
      if (!call.path.endsWith('/identify')) return undefined;
      return respond(200, { results: [{ id: '1', point: '' }, { id: '7', point: 'AAAA' }, { id: '1', error: statusJSON(3, 'x', 'ERROR_REASON_BAD_TAG') }, { id: '2', point: b64std(new Uint8Array(32)) }] });
    },
  });
  const c = new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch });
  const t = await c.pseudonymize('d', utf8('x'));
  const r = await c.identifyBatch('d', [t, t, t]);
  assert.ok(r.errors[0].is(ErrMissingResult));
  assert.ok(r.errors[1].is(ErrMissingResult), 'an empty point is no point; the later duplicate is ignored');
  assert.ok(r.errors[2].is(ErrIdentity));
});

test('client: retries UNAVAILABLE and RESOURCE_EXHAUSTED with RetryInfo, not other codes; the budget', async () => {
  let n = 0;
  const failures = [
    () => respond(503, statusJSON(14, 'key store unavailable, retry later', 'ERROR_REASON_UNSPECIFIED')),
    () => { throw new TypeError('fetch failed'); },
    () => respond(429, statusJSON(8, 'rate limit reached, retry later', 'ERROR_REASON_RATE_LIMITED', [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '0.050s' }]), { 'retry-after': '1' }),
  ];
  const svc = fakeService({ hook: async () => (n < failures.length ? failures[n++]() : undefined) });
  const waits = [];
  const c = new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch, retry: { baseDelayMs: 1, maxDelayMs: 2 }, jitter: (x) => { waits.push(x); return 0; } });
  const t0 = Date.now();
  const t = await c.pseudonymize('d', utf8('x'));
  assert.ok(t instanceof Transit);
  assert.equal(svc.calls.length, 4);
  assert.ok(Date.now() - t0 >= 45, 'waited the RetryInfo delay');
  assert.deepEqual(waits, [2, 3, 3], 'full jitter over [0, min(max, base·2ⁿ)]');

  // Final codes are not retried; RESOURCE_EXHAUSTED without RetryInfo (too large) neither.
  for (const [status, body, kind] of [
    [403, statusJSON(7, 'permission denied', 'ERROR_REASON_OPERATION_NOT_ALLOWED'), ErrOperationNotAllowed],
    [413, statusJSON(8, 'request body larger than the server accepts: send fewer items per call', 'ERROR_REASON_UNSPECIFIED'), undefined],
    [400, statusJSON(3, 'too many items', 'ERROR_REASON_BATCH_TOO_LARGE'), ErrBatchTooLarge],
  ]) {
    const s2 = fakeService({ hook: async () => respond(status, body) });
    const c2 = new Client({ baseUrl: 'http://gw.test', fetch: s2.fetch, retry: { baseDelayMs: 1 } });
    await assert.rejects(c2.pseudonymize('d', utf8('x')), (e) => {
      assert.ok(e instanceof CallError);
      assert.equal(e.httpStatus, status);
      assert.equal(e.code, body.code);
      if (kind) assert.ok(e.is(kind), e.kind?.name);
      else assert.equal(e.kind, undefined);
      return true;
    });
    assert.equal(s2.calls.length, 1, `HTTP ${status} is final`);
  }

  // A rate-limited caller waits for the server's delay; a 429 of a proxy with Retry-After only, too.
  let m = 0;
  const s3 = fakeService({ hook: async () => (m++ === 0 ? new Response('slow down', { status: 429, headers: { 'retry-after': '0' } }) : undefined) });
  const c3 = new Client({ baseUrl: 'http://gw.test', fetch: s3.fetch, retry: { baseDelayMs: 1 } });
  await c3.pseudonymize('d', utf8('x'));
  assert.equal(s3.calls.length, 2);

  // Every attempt fails: 1 + maxRetries attempts, then the budget runs dry.
  const s4 = fakeService({ hook: async () => respond(503, statusJSON(14, 'key store unavailable, retry later', 'ERROR_REASON_UNSPECIFIED')) });
  const c4 = new Client({ baseUrl: 'http://gw.test', fetch: s4.fetch, cacheMarginMs: 0, retry: { baseDelayMs: 0, budgetTokens: 4, budgetRatio: 0 } });
  await assert.rejects(c4.pseudonymize('d', utf8('x')), (e) => e instanceof CallError && e.is(ErrKeyStoreUnavailable) && e.code === Code.UNAVAILABLE);
  assert.equal(s4.calls.length, 4);
  await assert.rejects(c4.pseudonymize('d', utf8('x')), (e) => e.code === Code.UNAVAILABLE);
  assert.equal(s4.calls.length, 6, 'one token left: one retry');
  await assert.rejects(c4.pseudonymize('d', utf8('x')));
  assert.equal(s4.calls.length, 7, 'no token: no retry');
});

test('client: abort signals and timeouts, during a call and during a retry wait', async () => {
  const svc = fakeService({ hook: (call, init) => new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason))) });
  const c = new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch });
  const ac = new AbortController();
  const p = c.pseudonymize('d', utf8('x'), { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, (e) => e.name === 'AbortError');
  await assert.rejects(c.pseudonymize('d', utf8('y'), { timeoutMs: 20 }), (e) => e.name === 'TimeoutError');
  await assert.rejects(c.pseudonymize('d', utf8('z'), { signal: AbortSignal.abort() }), (e) => e.name === 'AbortError');

  // A retry wait that would pass the deadline is not made: the last error, at once.
  const s2 = fakeService({ hook: async () => respond(429, statusJSON(8, 'rate limit reached, retry later', 'ERROR_REASON_RATE_LIMITED', [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '10s' }])) });
  const c2 = new Client({ baseUrl: 'http://gw.test', fetch: s2.fetch });
  const t0 = Date.now();
  await assert.rejects(c2.pseudonymize('d', utf8('x'), { timeoutMs: 2000 }), (e) => e instanceof CallError && e.is(ErrRateLimited) && e.retryDelayMs === 10000);
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(s2.calls.length, 1);
  // An abort during the wait ends it.
  const ac2 = new AbortController();
  const p2 = c2.pseudonymize('d', utf8('x'), { signal: ac2.signal });
  setTimeout(() => ac2.abort(), 20);
  await assert.rejects(p2, (e) => e.name === 'AbortError');
});

test('client: the transit cache serves until margin before exp, merges concurrent calls, keys by domain', async () => {
  const exp = Math.floor(Date.now() / 1000) + 300;
  let release;
  const gate = new Promise((r) => (release = r));
  const svc = fakeService({ exp, hook: async () => { await gate; } });
  const c = new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch });
  const id = niss('85073003328');
  const ps = [c.pseudonymize('a', id), c.pseudonymize('a', niss('85.07.30-033.28')), c.pseudonymize('b', id)];
  release();
  const [t1, t2, t3] = await Promise.all(ps);
  assert.equal(t1, t2, 'one flight for the same value');
  assert.notEqual(t1, t3);
  assert.equal(svc.calls.length, 2);
  assert.equal(await c.pseudonymize('a', id), t1, 'served from the cache');
  const r = await c.pseudonymizeBatch('a', [id, utf8('other')]);
  assert.equal(r.results[0], t1);
  assert.equal(svc.calls.at(-1).body.items.length, 1, 'only the uncached item is sent');
  assert.equal(c.cacheSize, 3);
  // One expiring within the margin is not cached.
  const s2 = fakeService({ exp: Math.floor(Date.now() / 1000) + 10 });
  const c2 = new Client({ baseUrl: 'http://gw.test', fetch: s2.fetch });
  await c2.pseudonymize('a', id);
  await c2.pseudonymize('a', id);
  assert.equal(s2.calls.length, 2);
  assert.equal(c2.cacheSize, 0);
  // A follower whose leader gave up calls itself.
  let first = true;
  const s3 = fakeService({ hook: (call, init) => (first ? ((first = false), new Promise((_, rej) => init.signal.addEventListener('abort', () => rej(init.signal.reason)))) : undefined) });
  const c3 = new Client({ baseUrl: 'http://gw.test', fetch: s3.fetch });
  const ac = new AbortController();
  const leader = c3.pseudonymize('a', id, { signal: ac.signal });
  const follower = c3.pseudonymize('a', id);
  ac.abort();
  await assert.rejects(leader, (e) => e.name === 'AbortError');
  assert.ok((await follower) instanceof Transit);
});

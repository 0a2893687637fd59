// Tests of the retry of the items a batch's answer refuses with UNAVAILABLE
// (the service's key store, or the key-share plugin of a split domain, out
// of reach for them): they are sent again, alone, under the retry policy;
// every other refusal is final; the other items keep their answers whatever
// the retries do. The cases of Go's client/itemretry_test.go, against a
// scripted in-memory gateway (a fetch function), as in unit.test.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, Code, ItemError, Transit, b64url, encodeIdentifier } from '../dist/index.js';

const utf8 = (s) => new TextEncoder().encode(s);
const text = (b) => new TextDecoder().decode(b);

// A transitInfo of the service's shape (not sealed under any key: the client cannot tell).
function fakeInfo() {
  const h = { alg: 'dir', enc: 'A256GCM', kid: 't1', aud: 'urn:x', iat: 1000, exp: 1300 };
  return `${b64url(utf8(JSON.stringify(h)))}..${'A'.repeat(16)}.${'B'.repeat(75)}.${'C'.repeat(22)}`;
}

const respond = (status, v) => new Response(JSON.stringify(v), { status, headers: { 'content-type': 'application/json' } });
const statusJSON = (code, message, reason = 'ERROR_REASON_UNSPECIFIED') => ({
  code,
  message,
  details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason, domain: 'pseudonymizer.v1', metadata: {} }],
});

// itemScripted is an identify gateway that evaluates with the key 1 (Y = B)
// and refuses item id of call n (from 1) with refuse(n, id) when that is
// not OK; a call fails as a whole with callErr(n) (a Response) when that is
// defined, and omit(n) drops every result of call n. It records the items
// of each call, and when each call came.
function itemScripted({ refuse, callErr, omit } = {}) {
  const calls = [];
  const at = [];
  const fetch = async (url, init) => {
    assert.ok(new URL(url).pathname.endsWith('/identify'), url);
    const items = JSON.parse(init.body).items;
    calls.push(items);
    at.push(performance.now());
    const n = calls.length;
    const failed = callErr?.(n);
    if (failed) return failed;
    if (omit?.(n)) return respond(200, {});
    return respond(200, {
      results: items.map((it) => {
        const c = refuse(n, it.id);
        return c === Code.OK ? { id: it.id, point: it.blinded } : { id: it.id, error: statusJSON(c, 'scripted refusal') };
      }),
    });
  };
  return { fetch, calls, at, sent: () => calls.map((items) => items.map((it) => it.id)) };
}

// patients returns n pseudonyms in transit whose point embeds an
// identifier, so that identify with the key 1 returns it.
function patients(n) {
  const ids = Array.from({ length: n }, (_, i) => `8507300${String(i).padStart(4, '0')}`);
  return { ts: ids.map((id) => new Transit(encodeIdentifier(utf8(id)).toBytes(), fakeInfo())), ids };
}

// unavailable refuses item id with UNAVAILABLE in the first tries[id] calls.
const unavailable = (tries) => (n, id) => (n <= (tries[id] ?? 0) ? Code.UNAVAILABLE : Code.OK);
const jitterZero = () => 0;

function client(svc, { retry = {}, jitter = jitterZero } = {}) {
  return new Client({ baseUrl: 'http://gw.test', fetch: svc.fetch, cacheMarginMs: 0, retry, jitter });
}

const { ts, ids } = patients(5);

// check: the items of refused (index → code) are refused with that code,
// every other item identifies to its identifier.
function check(r, refused = {}) {
  ts.forEach((_, i) => {
    const c = refused[i];
    if (c !== undefined) {
      const e = r.errors[i];
      assert.ok(e instanceof ItemError && e.code === c && r.results[i] === undefined, `item ${i}: ${r.results[i]}, ${e}; want a refusal with code ${c}`);
    } else {
      assert.equal(r.errors[i], undefined, `item ${i}`);
      assert.equal(text(r.results[i]), ids[i], `item ${i}`);
    }
  });
}

test('item retry: items refused with UNAVAILABLE are sent again, alone, after the backoff of the retry policy', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 1, 3: 2 }) });
  const drawn = [];
  const jitterMax = (n) => {
    drawn.push(n - 1);
    return n - 1;
  };
  const r = await client(svc, { retry: { baseDelayMs: 10, maxDelayMs: 1000 }, jitter: jitterMax }).identifyBatch('rx_v1', ts);
  check(r);
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['1', '3'], ['3']]);
  assert.deepEqual(drawn, [10, 20], 'the waits of the retry policy: min(max, base·2ⁿ) with the jitter at its top');
  // setTimeout may fire up to a millisecond early.
  assert.ok(svc.at[1] - svc.at[0] >= 9 && svc.at[2] - svc.at[1] >= 19, `waited ${svc.at[1] - svc.at[0]} and ${svc.at[2] - svc.at[1]} ms`);
  // The same blinded points, ids and transitInfos as in the first call.
  for (const call of svc.calls.slice(1)) {
    for (const it of call) assert.deepEqual(it, svc.calls[0][Number(it.id)]);
  }
});

test('item retry: up to maxRetries rounds, then the item keeps its UNAVAILABLE refusal', async () => {
  const svc = itemScripted({ refuse: unavailable({ 2: 100, 4: 1 }) });
  const r = await client(svc, { retry: { maxRetries: 2 } }).identifyBatch('rx_v1', ts);
  check(r, { 2: Code.UNAVAILABLE });
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['2', '4'], ['2']]);
});

test('item retry: every other refusal is final, with one call', async () => {
  for (const code of [Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION, Code.NOT_FOUND,
    Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.DEADLINE_EXCEEDED, Code.UNKNOWN]) {
    const svc = itemScripted({ refuse: (_, id) => (id === '0' ? code : Code.OK) });
    const r = await client(svc).identifyBatch('rx_v1', ts);
    check(r, { 0: code });
    assert.equal(svc.calls.length, 1, `code ${code}: ${svc.calls.length} calls, want 1`);
  }
});

test('item retry: a retry that fails as a whole keeps the answers, and no call error', async () => {
  const svc = itemScripted({
    refuse: unavailable({ 0: 1, 4: 1 }),
    callErr: (n) => (n > 1 ? respond(403, statusJSON(Code.PERMISSION_DENIED, 'scripted', 'ERROR_REASON_OPERATION_NOT_ALLOWED')) : undefined),
  });
  const r = await client(svc).identifyBatch('rx_v1', ts);
  check(r, { 0: Code.UNAVAILABLE, 4: Code.UNAVAILABLE });
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['0', '4']], 'PERMISSION_DENIED is final for the retry too');
});

test("item retry: a round's call is itself retried as a whole", async () => {
  const svc = itemScripted({
    refuse: unavailable({ 1: 1 }),
    callErr: (n) => (n === 2 ? respond(503, statusJSON(Code.UNAVAILABLE, 'key store unavailable, retry later')) : undefined),
  });
  const r = await client(svc).identifyBatch('rx_v1', ts);
  check(r);
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['1'], ['1']]);
});

test('item retry: an item the retry does not answer keeps its refusal', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 1 }), omit: (n) => n > 1 });
  const r = await client(svc, { retry: { maxRetries: 1 } }).identifyBatch('rx_v1', ts);
  check(r, { 1: Code.UNAVAILABLE });
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['1']]);
});

test('item retry: only the first answer for an item counts; answers for items not sent are ignored', async () => {
  // Call 2 answers item 1 twice (UNAVAILABLE, then a point) and item 0,
  // which it was not sent; call 3 answers item 1.
  let n = 0;
  const calls = [];
  const fetch = async (_, init) => {
    const items = JSON.parse(init.body).items;
    calls.push(items.map((it) => it.id));
    n++;
    const byId = Object.fromEntries(items.map((it) => [it.id, it]));
    if (n === 1) return respond(200, { results: items.map((it) => (it.id === '1' ? { id: '1', error: statusJSON(Code.UNAVAILABLE, 'x') } : { id: it.id, point: it.blinded })) });
    if (n === 2) return respond(200, { results: [{ id: '1', error: statusJSON(Code.UNAVAILABLE, 'x') }, { id: '1', point: byId['1'].blinded }, { id: '0', error: statusJSON(Code.INTERNAL, 'x') }] });
    return respond(200, { results: [{ id: '1', point: byId['1'].blinded }] });
  };
  const r = await client({ fetch }).identifyBatch('rx_v1', ts);
  check(r);
  assert.deepEqual(calls, [['0', '1', '2', '3', '4'], ['1'], ['1']]);
});

test('item retry: each round takes a token of the budget', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 100 }) });
  const r = await client(svc, { retry: { budgetTokens: 2, budgetRatio: 0 } }).identifyBatch('rx_v1', ts);
  check(r, { 1: Code.UNAVAILABLE });
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['1'], ['1']], 'two tokens: two rounds of the three maxRetries allows');
});

test('item retry: a round adds nothing to the budget (one call, one share)', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 100 }) });
  const r = await client(svc, { retry: { budgetTokens: 1, budgetRatio: 1 } }).identifyBatch('rx_v1', ts);
  check(r, { 1: Code.UNAVAILABLE });
  assert.deepEqual(svc.sent(), [['0', '1', '2', '3', '4'], ['1']], 'one token: one round');
});

test('item retry: no wait past the timeout, and an abort during the wait, end the rounds with the answers', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 100 }) });
  const c = client(svc, { retry: { baseDelayMs: 10000, maxDelayMs: 10000 }, jitter: (n) => n - 1 });
  const t0 = Date.now();
  check(await c.identifyBatch('rx_v1', ts, { timeoutMs: 2000 }), { 1: Code.UNAVAILABLE });
  assert.ok(Date.now() - t0 < 1900, 'a wait that would pass the deadline (2 s) is not made');
  assert.equal(svc.calls.length, 1);

  const ac = new AbortController();
  const p = c.identifyBatch('rx_v1', ts, { signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  check(await p, { 1: Code.UNAVAILABLE });
  assert.equal(svc.calls.length, 2);
});

test('item retry: none when maxRetries is 0', async () => {
  const svc = itemScripted({ refuse: unavailable({ 1: 1 }) });
  const r = await client(svc, { retry: { maxRetries: 0, baseDelayMs: 0 } }).identifyBatch('rx_v1', ts);
  check(r, { 1: Code.UNAVAILABLE });
  assert.equal(svc.calls.length, 1);
});

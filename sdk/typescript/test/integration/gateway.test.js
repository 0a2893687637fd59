// The TypeScript client against the built Go server (development mode, REST
// gateway on), and interoperability both ways with the Go SDKs through
// test/gointerop: the Go owner SDK opens what the TypeScript client
// obtained, the TypeScript client identifies what the Go owner SDK made, and
// the Go client SDK's pseudonyms equal the TypeScript client's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AtRest,
  CallError,
  Client,
  Code,
  ErrBadTag,
  ErrInvalidNISS,
  ErrMalformedText,
  ErrOperationNotAllowed,
  ErrRateLimited,
  ErrSubjectMismatch,
  ErrUnauthenticated,
  ItemError,
  Transit,
  b64url,
  isError,
  niss,
  statusTable,
} from '../../dist/index.js';
import { gointerop, startServer } from './env.js';

const text = (b) => new TextDecoder().decode(b);
const NISS = ['85.07.30-033.28', '00010100105', '85270100103', '71.11.09-213.18', '93051822361'];
const hex = (b) => Buffer.from(b).toString('hex');

let srv;
let jwtDir;
let signToken;

// A bearer-token key pair: the server verifies ES256 tokens of this issuer and audience.
async function makeJWTKey() {
  const kp = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const spki = Buffer.from(await crypto.subtle.exportKey('spki', kp.publicKey)).toString('base64');
  jwtDir = await mkdtemp(join(tmpdir(), 'pseudonymizer-ts-jwt-'));
  const path = join(jwtDir, 'jwt.pem');
  await writeFile(path, `-----BEGIN PUBLIC KEY-----\n${spki.match(/.{1,64}/g).join('\n')}\n-----END PUBLIC KEY-----\n`);
  signToken = async (sub) => {
    const enc = (o) => b64url(new TextEncoder().encode(JSON.stringify(o)));
    const now = Math.floor(Date.now() / 1000);
    const input = `${enc({ alg: 'ES256', typ: 'JWT' })}.${enc({ iss: 'https://idp.test', aud: 'pseudonymizer', sub, iat: now, exp: now + 300 })}`;
    const sig = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, kp.privateKey, new TextEncoder().encode(input)));
    return `${input}.${b64url(sig)}`;
  };
  return path;
}

before(async () => {
  const key = await makeJWTKey();
  srv = await startServer({ args: ['-max-batch', '8', '-burst', '8', '-jwt-key', key, '-jwt-issuer', 'https://idp.test', '-jwt-audience', 'pseudonymizer'] });
});

after(async () => {
  await srv?.stop();
  if (jwtDir) await rm(jwtDir, { recursive: true, force: true });
});

const client = (principal, opts = {}) =>
  new Client({ baseUrl: srv.baseUrl, headers: principal ? { 'X-Pseudonymizer-Principal': principal } : {}, ...opts });

test('round trip: pseudonymize → identify, one value and a batch with a bad item; domain()', async () => {
  const c = client('dr-ts');
  const d = await c.domain('demo_v1');
  assert.equal(d.name, 'demo_v1');
  assert.equal(d.audience, 'urn:pseudonymizer:demo:v1');
  assert.equal(d.ttlMs, 300_000);
  assert.deepEqual(d.operations, ['pseudonymize', 'identify']);
  const t = await c.pseudonymize('demo_v1', niss('85.07.30-033.28'));
  assert.ok(t instanceof Transit);
  assert.ok(Math.abs(t.expiry().getTime() - (Date.now() + 300_000)) < 5_000);
  assert.equal(text(await c.identify('demo_v1', t)), '85073003328');
  assert.equal(text(await c.identify('demo_v1', t.toString())), '85073003328');

  const bad = `${t.toString().slice(0, 44)}${t.info.slice(0, -2)}AA`; // another tag
  const r = await c.identifyBatch('demo_v1', [t, bad, 'not a pseudonym', t]);
  assert.equal(text(r.results[0]), '85073003328');
  assert.ok(r.errors[1] instanceof ItemError && r.errors[1].is(ErrBadTag) && r.errors[1].reason === 'ERROR_REASON_BAD_TAG');
  assert.ok(isError(r.errors[2], ErrMalformedText));
  assert.equal(text(r.results[3]), '85073003328');
});

test('batches over the service maximum (-max-batch 8) are split at it', async () => {
  const c = client('dr-batch', { maxBatch: 1000, cacheMarginMs: 0 });
  const ids = Array.from({ length: 19 }, (_, i) => new TextEncoder().encode(`INAMI:${10000 + i}`));
  const r = await c.pseudonymizeBatch('demo_v1', ids);
  assert.equal(c.maxBatch, 8, 'learned from BATCH_TOO_LARGE metadata max_batch_size');
  assert.ok(r.errors.every((e) => e === undefined));
  const back = await c.identifyBatch('demo_v1', r.results);
  assert.deepEqual(back.results.map(text), ids.map(text));
});

test('TS client → Go owner SDK: the owner opens the transit pseudonyms; spellings and the Go client agree', async () => {
  const c = client('dr-ts', { cacheMarginMs: 0 });
  const ids = NISS.map((s) => niss(s));
  const r = await c.pseudonymizeBatch('demo_v1', ids);
  assert.ok(r.errors.every((e) => e === undefined));
  const again = await c.pseudonymize('demo_v1', niss('85073003328'));
  const opened = await gointerop(['open', '-data-dir', srv.dataDir, '-domain', 'demo_v1'], [...r.results.map(String), again.toString()]);
  for (const o of opened) {
    assert.equal(o.error, undefined, o.error);
    assert.equal(o.atRest.length, 43);
  }
  assert.equal(opened[0].atRest, opened[5].atRest, 'two spellings, two blindings, one pseudonym at rest');
  assert.equal(new Set(opened.slice(0, 5).map((o) => o.atRest)).size, 5);
  // The Go client SDK (gRPC) gets the same pseudonyms at rest.
  const goTransit = await gointerop(['pseudonymize', '-addr', srv.grpc, '-domain', 'demo_v1', '-principal', 'dr-go'], NISS);
  const goOpened = await gointerop(['open', '-data-dir', srv.dataDir, '-domain', 'demo_v1'], goTransit);
  assert.deepEqual(goOpened.map((o) => o.atRest), opened.slice(0, 5).map((o) => o.atRest));
  // And the TS client identifies the Go client's transit pseudonyms.
  const back = await c.identifyBatch('demo_v1', goTransit);
  assert.deepEqual(back.results.map(text), ids.map(text));
});

test('Go owner SDK → TS client: owner-made transit forms are identified, bound ones only by their subject', async () => {
  const c = client('dr-alice');
  const t = await c.pseudonymize('demo_v1', niss('93051822361'));
  const [{ atRest }] = await gointerop(['open', '-data-dir', srv.dataDir, '-domain', 'demo_v1'], [t.toString()]);
  const [free] = await gointerop(['transit', '-data-dir', srv.dataDir, '-domain', 'demo_v1'], [atRest]);
  const [bound] = await gointerop(['transit', '-data-dir', srv.dataDir, '-domain', 'demo_v1', '-sub', 'dr-alice'], [atRest]);
  assert.equal(text(await c.identify('demo_v1', free)), '93051822361');
  assert.equal(Transit.parse(bound).subject(), 'dr-alice');
  assert.equal(text(await c.identify('demo_v1', bound)), '93051822361');
  await assert.rejects(client('dr-bob').identify('demo_v1', bound), (e) => {
    assert.ok(e instanceof ItemError);
    assert.ok(e.is(ErrSubjectMismatch));
    assert.equal(e.code, Code.PERMISSION_DENIED);
    assert.equal(e.reason, 'ERROR_REASON_WRONG_SUBJECT');
    return true;
  });
  // Owners never identify: a call error, not an item error.
  await assert.rejects(client('demo-owner').identify('demo_v1', free), (e) => {
    assert.ok(e instanceof CallError && e.is(ErrOperationNotAllowed));
    assert.equal(e.httpStatus, 403);
    return true;
  });
});

test('convert (owner of demo_v1 → demo_v2): the Go owner of demo_v2 opens the result, equal to a direct pseudonymize', async () => {
  const c = client('dr-ts');
  const owner = client('demo-owner');
  const id = niss('71.11.09-213.18');
  const tA = await c.pseudonymize('demo_v1', id);
  const tB = await owner.convert('demo_v1', 'demo_v2', tA);
  assert.equal(tB.header().aud, (await c.domain('demo_v2')).audience);
  const direct = await c.pseudonymize('demo_v2', id);
  const opened = await gointerop(['open', '-data-dir', srv.dataDir, '-domain', 'demo_v2'], [tB.toString(), direct.toString()]);
  assert.equal(opened[0].error, undefined);
  assert.equal(opened[0].atRest, opened[1].atRest);
  const batch = await owner.convertBatch('demo_v1', 'demo_v2', [tA, 'garbage']);
  assert.ok(batch.results[0] instanceof Transit);
  assert.ok(batch.errors[1].is(ErrMalformedText));
  // demo_v2 → demo_v1 is not in the policy.
  await assert.rejects(owner.convert('demo_v2', 'demo_v1', tB), (e) => e instanceof CallError && e.is(ErrOperationNotAllowed));
});

test('bearer tokens: the token hook names the caller; a bad token is UNAUTHENTICATED, not retried', async () => {
  let calls = 0;
  const c = new Client({ baseUrl: srv.baseUrl, token: async () => (calls++, signToken('dr-token')) });
  const t = await c.pseudonymize('demo_v1', niss('00010100105'));
  const [bound] = await gointerop(['transit', '-data-dir', srv.dataDir, '-domain', 'demo_v1', '-sub', 'dr-token'],
    [(await gointerop(['open', '-data-dir', srv.dataDir, '-domain', 'demo_v1'], [t.toString()]))[0].atRest]);
  assert.equal(text(await c.identify('demo_v1', bound)), '00010100105', 'the token names dr-token');
  assert.equal(calls, 2);
  const bad = new Client({ baseUrl: srv.baseUrl, token: () => 'not.a.token' });
  await assert.rejects(bad.pseudonymize('demo_v1', niss('00010100105')), (e) => {
    assert.ok(e instanceof CallError);
    assert.equal(e.httpStatus, 401);
    assert.equal(e.code, Code.UNAUTHENTICATED);
    assert.ok(e.is(ErrUnauthenticated));
    return true;
  });
});

test('rate limit: RESOURCE_EXHAUSTED with RetryInfo is waited out and retried', async () => {
  // A server of its own: 8 items per second, burst 8. The second batch of
  // 8 right away is refused with a RetryInfo of about a second.
  const slow = await startServer({ args: ['-max-batch', '8', '-burst', '8', '-rate', '8'] });
  try {
    const statuses = [];
    const c = new Client({
      baseUrl: slow.baseUrl,
      cacheMarginMs: 0,
      fetch: async (url, init) => {
        const r = await fetch(url, init);
        statuses.push(r.status);
        return r;
      },
    });
    const ids = Array.from({ length: 8 }, (_, i) => new TextEncoder().encode(`rate-${i}`));
    const t0 = Date.now();
    for (let i = 0; i < 2; i++) {
      const r = await c.pseudonymizeBatch('demo_v1', ids, { timeoutMs: 20_000 });
      assert.ok(r.errors.every((e) => e === undefined));
    }
    assert.deepEqual(statuses, [200, 429, 200]);
    assert.ok(Date.now() - t0 >= 500, 'waited for the RetryInfo delay');
    // Without retries, the refusal is the call's error, with its delay.
    const once = new Client({ baseUrl: slow.baseUrl, cacheMarginMs: 0, retry: { maxRetries: 0 } });
    await assert.rejects(once.pseudonymizeBatch('demo_v1', ids), (e) => {
      assert.ok(e instanceof CallError && e.is(ErrRateLimited));
      assert.equal(e.httpStatus, 429);
      assert.ok(e.retryDelayMs > 0 && e.retryDelayMs <= 1000, `retryDelayMs ${e.retryDelayMs}`);
      return true;
    });
  } finally {
    await slow.stop();
  }
});

test('abort: an aborted signal ends the call with its reason', async () => {
  const c = client('dr-ts');
  await assert.rejects(c.pseudonymize('demo_v1', niss('85073003328'), { signal: AbortSignal.abort() }), (e) => e.name === 'AbortError');
  const ac = new AbortController();
  const p = c.pseudonymizeBatch('demo_v1', Array.from({ length: 8 }, () => niss('85073003328')), { signal: ac.signal });
  ac.abort(new Error('stop'));
  await assert.rejects(p, /stop/);
});

test('the errors of the SDK are Go protoerr table, row by row; parsers agree with Go on NISS and text forms', async () => {
  const goRows = await gointerop(['errors']);
  assert.deepEqual(
    statusTable.map((k) => ({ text: k.text, code: k.status.code, reason: k.status.reason, message: k.status.message, perItem: k.status.perItem })),
    goRows,
  );
  const c = client('dr-ts');
  const t = await c.pseudonymize('demo_v1', niss('85073003328'));
  const s = t.toString();
  const nissCases = [...NISS, '', '8507300332', '85073003327', '85.07.30-033.2X', '85130100103', '85530100103', '1'.repeat(33), ' 85 07 30 033 28 ', '８5073003328', '00010100173', '85/07/30/033/28'];
  const transitCases = [s, s.slice(0, -1), s + 'A', s.replace(':', ';'), s.slice(0, 43), s.slice(0, 44), s.slice(1), 'A'.repeat(43) + s.slice(43),
    s.slice(0, 44) + b64url(new TextEncoder().encode('{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"a","iat":1,"exp":2,"typ":"JWE"}')) + '..a.b.c',
    s.slice(0, 44) + b64url(new TextEncoder().encode(' {"exp":2,"iat":1,"aud":"a\\u00e9","kid":"t1","enc":"A256GCM","alg":"dir","sub":"x"} ')) + '..a.b.c',
    s.replace(/\.([^.]*)$/, '.$1\n'), s + '.'];
  const atRestCases = [s.slice(0, 43), s.slice(0, 42) + 'A', s.slice(0, 42) + 'B', 'A'.repeat(43), s.slice(0, 42), s.slice(0, 43) + '='];
  const go = await gointerop(['parse'], { niss: nissCases, transit: transitCases, atRest: atRestCases });
  nissCases.forEach((v, i) => {
    let ts;
    try {
      ts = { ok: true, value: text(niss(v)) };
    } catch (e) {
      assert.ok(isError(e, ErrInvalidNISS));
      ts = { ok: false };
    }
    assert.deepEqual(ts, go.niss[i], `NISS ${JSON.stringify(v)}`);
  });
  transitCases.forEach((v, i) => {
    let ts;
    try {
      const p = Transit.parse(v);
      ts = { ok: true, value: hex(p.point), exp: p.header().exp, ...(p.subject() ? { sub: p.subject() } : {}) };
    } catch (e) {
      assert.ok(isError(e, ErrMalformedText));
      ts = { ok: false };
    }
    assert.deepEqual(ts, go.transit[i], `transit case ${i}`);
  });
  atRestCases.forEach((v, i) => {
    let ts;
    try {
      ts = { ok: true, value: hex(AtRest.parse(v).bytes) };
    } catch (e) {
      assert.ok(isError(e, ErrMalformedText));
      ts = { ok: false };
    }
    assert.deepEqual(ts, go.atRest[i], `at rest case ${i}`);
  });
  assert.equal(go.atRest[0].ok, true);
});

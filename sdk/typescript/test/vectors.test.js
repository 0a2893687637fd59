// Every value of pseudonymizer/testdata/vectors.json (docs/test-vectors.md),
// reproduced with this package for the client's side (encode, blind,
// unblind, identify, text forms) and with raw group operations, SHAKE256 and
// WebCrypto's AES-GCM for the service's and the owners' (evaluate, seal).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { shake256 } from '@noble/hashes/sha3.js';
import { ristretto255 } from '@noble/curves/ed25519.js';
import {
  AtRest,
  Transit,
  blind,
  blindBatch,
  blindTransit,
  blindTransitBatch,
  b64url,
  b64urlDecode,
  decodePoint,
  decodeScalar,
  encodeIdentifier,
  identifierOf,
  parseHeader,
  randomScalar,
  scalarToBytes,
  ORDER,
} from '../dist/index.js';

const V = JSON.parse(readFileSync(new URL('../../../pseudonymizer/testdata/vectors.json', import.meta.url), 'utf8'));

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));
const utf8 = (s) => new TextEncoder().encode(s);

// stream is the vectors' deterministic randomness: SHAKE256("pseudonymizer/v1 test vectors/" + label).
function stream(label) {
  const h = shake256.create({}).update(utf8('pseudonymizer/v1 test vectors/' + label));
  return (n) => h.xof(n);
}

const inv = (s) => {
  // Fermat, as the library: s^(ℓ-2) mod ℓ.
  let r = 1n, b = s % ORDER, e = ORDER - 2n;
  while (e > 0n) {
    if (e & 1n) r = (r * b) % ORDER;
    b = (b * b) % ORDER;
    e >>= 1n;
  }
  return r;
};
const mul = (a, b) => (a * b) % ORDER;
const P = (h) => decodePoint(unhex(h));
const S = (h) => decodeScalar(unhex(h));

// seal writes a transitInfo as the Go implementation does: header members in
// the order alg, enc, kid, aud, iat, exp, sub, no white space; payload
// {"scalar":"…"}; AES-256-GCM with the encoded header as AAD.
async function seal(key, kid, aud, iat, ttl, sub, s, nonce) {
  let h = `{"alg":"dir","enc":"A256GCM","kid":${JSON.stringify(kid)},"aud":${JSON.stringify(aud)},"iat":${iat},"exp":${iat + ttl}`;
  if (sub) h += `,"sub":${JSON.stringify(sub)}`;
  h += '}';
  const eh = b64url(utf8(h));
  const payload = utf8(`{"scalar":"${b64url(scalarToBytes(s))}"}`);
  const k = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: utf8(eh), tagLength: 128 }, k, payload));
  return `${eh}..${b64url(nonce)}.${b64url(ct.subarray(0, ct.length - 16))}.${b64url(ct.subarray(ct.length - 16))}`;
}

// open decrypts a transitInfo and returns its scalar.
async function open(key, ti) {
  const [eh, , iv, ct, tag] = ti.split('.');
  const k = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  const buf = new Uint8Array([...b64urlDecode(ct), ...b64urlDecode(tag)]);
  const pt = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: b64urlDecode(iv), additionalData: utf8(eh), tagLength: 128 }, k, buf));
  const j = JSON.parse(new TextDecoder().decode(pt));
  return decodeScalar(b64urlDecode(j.scalar));
}

const domains = Object.fromEntries(V.domains.map((d) => [d.name, d]));

test('domains: k and the transit key from the stream domain/<name>', () => {
  for (const d of V.domains) {
    const r = stream('domain/' + d.name);
    assert.equal(hex(scalarToBytes(randomScalar(r))), d.k, d.name);
    assert.equal(hex(r(32)), d.transit_key, d.name);
    assert.equal(d.audience, 'urn:be:ehealth:pseudonymisation:' + d.name);
  }
  assert.equal(hex(scalarToBytes(randomScalar(stream('owner_k2')))), V.owner_k2);
});

for (const v of V.encode) {
  test(`encode/${v.id_hex}`, () => {
    const M = encodeIdentifier(unhex(v.id_hex));
    const b = M.toBytes();
    assert.equal(hex(b), v.point);
    assert.equal(b[0] >> 1, v.counter);
    assert.equal(hex(identifierOf(M)), v.id_hex);
  });
}

for (const v of V.pseudonymize) {
  test(v.seed, async () => {
    const d = domains.prescriptions_v1;
    const k = S(d.k);
    const id = unhex(v.id_hex);
    // Client: blind with b from <seed>/client.
    assert.equal(hex(scalarToBytes(randomScalar(stream(v.seed + '/client')))), v.b);
    const { blinded, unblinder } = blind(id, { rand: stream(v.seed + '/client') });
    assert.equal(hex(blinded), v.blinded);
    assert.equal(String(unblinder), 'Unblinder(redacted)');
    assert.equal(JSON.stringify({ unblinder }), '{"unblinder":"Unblinder(redacted)"}');
    // Service: s then the nonce from <seed>/service; Y = (s·k)·B; seal s.
    const sr = stream(v.seed + '/service');
    const s = randomScalar(sr);
    const nonce = sr(12);
    assert.equal(hex(scalarToBytes(s)), v.s);
    assert.equal(hex(nonce), v.nonce);
    const Y = P(v.blinded).multiply(mul(s, k)).toBytes();
    assert.equal(hex(Y), v.evaluated);
    const ti = await seal(unhex(d.transit_key), d.kid, d.audience, V.iat, d.ttl_seconds, '', s, nonce);
    assert.equal(ti, v.transit_info);
    assert.equal(await open(unhex(d.transit_key), v.transit_info), s);
    // Client: unblind into the transit pseudonym and its text form.
    const t = unblinder.unblind(unhex(v.evaluated), v.transit_info);
    assert.equal(hex(t.point), v.transit_point);
    assert.equal(t.toString(), v.transit_text);
    assert.equal(t.expiry().getTime(), (V.iat + d.ttl_seconds) * 1000);
    assert.equal(t.subject(), '');
    const parsed = Transit.parse(v.transit_text);
    assert.equal(hex(parsed.point), v.transit_point);
    assert.equal(parsed.info, v.transit_info);
    // The batch form gives the same, with one inversion.
    const bb = blindBatch([id, new Uint8Array(0)], { rand: stream(v.seed + '/client') });
    assert.equal(hex(bb.blinded[0]), v.blinded);
    assert.equal(bb.blinded[1], undefined);
    assert.equal(bb.errors[1].kind.name, 'ErrEmptyIdentifier');
    const ub = bb.unblinder.unblindBatch([unhex(v.evaluated), new Uint8Array(32)], [v.transit_info, v.transit_info]);
    assert.equal(ub.results[0].toString(), v.transit_text);
    assert.equal(ub.errors[0], undefined);
    assert.equal(ub.errors[1].kind.name, 'ErrInvalidPoint');
    // Owner: at rest P = s⁻¹·P_T = k·M, text form, and k2·P.
    const ar = P(v.transit_point).multiply(inv(s)).toBytes();
    assert.equal(hex(ar), v.at_rest);
    assert.equal(hex(encodeIdentifier(id).multiply(k).toBytes()), v.at_rest);
    assert.equal(new AtRest(ar).toString(), v.at_rest_text);
    assert.equal(hex(AtRest.parse(v.at_rest_text).bytes), v.at_rest);
    assert.equal(hex(P(v.at_rest).multiply(S(V.owner_k2)).toBytes()), v.at_rest_double);
  });
}

for (const v of V.identify) {
  test(v.seed, async () => {
    const d = domains.prescriptions_v1;
    const k = S(d.k);
    assert.equal(hex(encodeIdentifier(unhex(v.id_hex)).multiply(k).toBytes()), v.at_rest);
    // Owner: s then the nonce from <seed>/owner; P_T = s·P; seal s (with sub).
    const or = stream(v.seed + '/owner');
    const s = randomScalar(or);
    const nonce = or(12);
    assert.equal(hex(scalarToBytes(s)), v.s);
    assert.equal(hex(nonce), v.nonce);
    assert.equal(hex(P(v.at_rest).multiply(s).toBytes()), v.transit_point);
    assert.equal(await seal(unhex(d.transit_key), d.kid, d.audience, V.iat, d.ttl_seconds, v.sub, s, nonce), v.transit_info);
    assert.equal(`${b64url(unhex(v.transit_point))}:${v.transit_info}`, v.transit_text);
    // Client: parse the text form, blind with b from <seed>/client.
    const t = Transit.parse(v.transit_text);
    assert.equal(t.subject(), v.sub ?? '');
    assert.equal(parseHeader(t.info).kid, d.kid);
    assert.equal(hex(scalarToBytes(randomScalar(stream(v.seed + '/client')))), v.b);
    const { blinded, unblinder } = blindTransit(t, { rand: stream(v.seed + '/client') });
    assert.equal(hex(blinded), v.blinded);
    // Service: Y = (s·k)⁻¹·B.
    assert.equal(hex(P(v.blinded).multiply(inv(mul(s, k))).toBytes()), v.evaluated);
    // Client: M = b⁻¹·Y, the identifier.
    assert.equal(hex(unblinder.identify(unhex(v.evaluated))), v.id_hex);
    const bb = blindTransitBatch([t], { rand: stream(v.seed + '/client') });
    assert.equal(hex(bb.blinded[0]), v.blinded);
    const r = bb.unblinder.identifyBatch([unhex(v.evaluated)]);
    assert.equal(hex(r.results[0]), v.id_hex);
  });
}

for (const v of V.convert) {
  test(v.seed, async () => {
    const A = domains[v.from];
    const B = domains[v.to];
    const kA = S(A.k);
    const kB = S(B.k);
    // Owner A: transit form of its pseudonym at rest.
    const or = stream(v.seed + '/owner');
    const s = randomScalar(or);
    const nonce = or(12);
    assert.equal(hex(scalarToBytes(s)), v.s);
    assert.equal(hex(P(v.at_rest_from).multiply(s).toBytes()), v.transit_point);
    assert.equal(await seal(unhex(A.transit_key), A.kid, A.audience, V.iat, A.ttl_seconds, '', s, nonce), v.transit_info);
    const t = Transit.parse(v.transit_text);
    assert.equal(hex(t.point), v.transit_point);
    // Owner A blinds with b from <seed>/owner-blind.
    assert.equal(hex(scalarToBytes(randomScalar(stream(v.seed + '/owner-blind')))), v.b);
    const { blinded, unblinder } = blindTransit(t, { rand: stream(v.seed + '/owner-blind') });
    assert.equal(hex(blinded), v.blinded);
    // Service: s2 then nonce2 from <seed>/service; Y = (s2·k_B·(s·k_A)⁻¹)·B.
    const sr = stream(v.seed + '/service');
    const s2 = randomScalar(sr);
    const nonce2 = sr(12);
    assert.equal(hex(scalarToBytes(s2)), v.s2);
    assert.equal(hex(nonce2), v.nonce2);
    assert.equal(hex(P(v.blinded).multiply(mul(mul(s2, kB), inv(mul(s, kA)))).toBytes()), v.evaluated);
    assert.equal(await seal(unhex(B.transit_key), B.kid, B.audience, V.iat, B.ttl_seconds, '', s2, nonce2), v.transit_info_to);
    // Owner A unblinds into a transit pseudonym of B.
    const tB = unblinder.unblind(unhex(v.evaluated), v.transit_info_to);
    assert.equal(hex(tB.point), v.transit_point_to);
    assert.equal(tB.toString(), v.transit_text_to);
    // Owner B: at rest, equal to k_B·M.
    assert.equal(hex(P(v.transit_point_to).multiply(inv(await open(unhex(B.transit_key), v.transit_info_to))).toBytes()), v.at_rest_to);
    const M = P(v.at_rest_from).multiply(inv(kA));
    assert.equal(hex(M.multiply(kB).toBytes()), v.at_rest_to);
    assert.ok(ristretto255.Point.fromBytes(unhex(v.at_rest_to)));
  });
}

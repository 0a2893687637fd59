// bench.js measures the client's CPU per item in Node, as Go's
// BenchmarkClientBlindUnblind, BenchmarkClientBlindUnblindBatch100 and
// BenchmarkScalarMult (pseudonymizer/bench_test.go) do in Go: encode and
// blind an identifier, then unblind a service answer (with its transitInfo
// header check); and one scalar multiplication. It prints one JSON object:
// CPU nanoseconds (user + system, process.cpuUsage) per item, the least of
// three rounds.
//
//	node test/bench.js [seconds per benchmark, default 1]
import { blind, blindBatch, decodePoint, randomScalar, b64url, ORDER } from '../dist/index.js';

const seconds = Number(process.argv[2] ?? 1);
const utf8 = (s) => new TextEncoder().encode(s);
const info = `${b64url(utf8('{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"urn:pseudonymizer:demo:v1","iat":1767225600,"exp":1767225900}'))}..${'A'.repeat(16)}.${'B'.repeat(75)}.${'C'.repeat(22)}`;

// A service answer: (s·k)·B for a blinding of the identifier.
const k = randomScalar();
const s = randomScalar();
const id = utf8('85073003328');
const Y = decodePoint(blind(id).blinded).multiply((s * k) % ORDER).toBytes();

function cpuNs() {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

// measure runs f (which handles `items` items) for about `seconds`, after a
// warm-up, three times, and returns the least CPU ns per item (the machine
// may be busy with other work: the least is the closest to the cost).
function measure(f, items) {
  const warm = Date.now() + 300;
  while (Date.now() < warm) f();
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    let n = 0;
    const c0 = cpuNs();
    const end = Date.now() + (seconds * 1000) / 3;
    while (Date.now() < end) {
      f();
      n++;
    }
    best = Math.min(best, (cpuNs() - c0) / n / items);
  }
  return best;
}

const ids100 = Array.from({ length: 100 }, (_, i) => utf8('8507300' + String(i).padStart(4, '0')));
const Ys100 = ids100.map(() => Y);
const infos100 = ids100.map(() => info);
let P = decodePoint(Y);

const out = {
  node: process.version,
  blindUnblindNsPerItem: measure(() => {
    const { unblinder } = blind(id);
    unblinder.unblind(Y, info);
  }, 1),
  blindUnblindBatch100NsPerItem: measure(() => {
    const { unblinder } = blindBatch(ids100);
    unblinder.unblindBatch(Ys100, infos100);
  }, 100),
  scalarMultNs: measure(() => {
    P = P.multiply(s);
  }, 1),
};
console.log(JSON.stringify(out));

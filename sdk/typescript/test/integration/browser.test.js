// The built package in a real browser: Debian's Chromium, headless, driven
// by playwright-core (no browser download: the system binary). Two tiny
// static servers on 127.0.0.1 serve the same page (test/browser/index.html)
// and the package: one is the origin the gateway allows
// (-rest-cors-origins), the other one it refuses. The page pseudonymizes and
// identifies through the gateway; from the refused origin its calls fail.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile, access } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { gointerop, startServer } from './env.js';

const root = fileURLToPath(new URL('../..', import.meta.url)); // sdk/typescript/
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json' };

// serve answers the page, the built package (/sdk/) and its two
// dependencies (/node_modules/@noble/), nothing else.
function staticServer() {
  const srv = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    let file;
    if (path === '/' || path === '/index.html') file = join(root, 'test/browser/index.html');
    else if (path.startsWith('/sdk/')) file = join(root, 'dist', normalize(path.slice(5)));
    else if (path.startsWith('/node_modules/@noble/')) file = join(root, normalize(path.slice(1)));
    if (!file || !file.startsWith(root) || file.includes('..')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

// chromiumPath finds Debian's Chromium: $CHROMIUM_BIN, else the binary
// behind /usr/bin/chromium's wrapper script.
async function chromiumPath() {
  const candidates = [process.env.CHROMIUM_BIN, '/usr/lib/chromium/chromium', '/usr/bin/chromium'].filter(Boolean);
  for (const c of candidates) {
    try {
      await access(c);
      return c;
    } catch {}
  }
  throw new Error(`no Chromium found (tried ${candidates.join(', ')}): apt-get install chromium, or set CHROMIUM_BIN`);
}

let allowed, refused, gw, browser;
const origin = (s) => `http://127.0.0.1:${s.address().port}`;

before(async () => {
  [allowed, refused] = await Promise.all([staticServer(), staticServer()]);
  gw = await startServer({ origins: [origin(allowed)] });
  browser = await chromium.launch({ executablePath: await chromiumPath(), headless: true, args: ['--no-sandbox'], timeout: 60_000 });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  for (const s of [allowed, refused]) s?.close();
});

// run opens the page at the origin of server s and waits for its result.
async function run(s, params) {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  try {
    const q = new URLSearchParams({ gateway: gw.baseUrl, ...params });
    await page.goto(`${origin(s)}/?${q}`, { timeout: 30_000 });
    await page.waitForFunction(() => window.result !== undefined, null, { timeout: 30_000 }).catch((e) => {
      throw new Error(`${e.message}\n${logs.join('\n')}`);
    });
    return { result: await page.evaluate(() => window.result), logs };
  } finally {
    await page.close();
  }
}

test('browser, allowed origin: pseudonymize and identify through the gateway; the Go owner opens the result', async () => {
  const { result, logs } = await run(allowed, { niss: '85.07.30-033.28' });
  assert.equal(result.ok, true, `${JSON.stringify(result)}\n${logs.join('\n')}`);
  assert.equal(result.identified, '85073003328');
  assert.equal(result.cached, true, 'the second pseudonymize came from the cache');
  assert.ok(Math.abs(result.expiry - (Date.now() + 300_000)) < 10_000);
  const [opened] = await gointerop(['open', '-data-dir', gw.dataDir, '-domain', 'demo_v1'], [result.transit]);
  assert.equal(opened.error, undefined);
  const [go] = await gointerop(['open', '-data-dir', gw.dataDir, '-domain', 'demo_v1'],
    await gointerop(['pseudonymize', '-addr', gw.grpc, '-domain', 'demo_v1'], ['85073003328']));
  assert.equal(opened.atRest, go.atRest, 'the browser and the Go client get the same pseudonym');
});

test('browser, refused origin: the gateway refuses the preflight, the call fails as unreachable', async () => {
  const { result, logs } = await run(refused, { niss: '85.07.30-033.28', retries: '0' });
  assert.equal(result.ok, false);
  assert.equal(result.callError, true, JSON.stringify(result));
  assert.equal(result.code, 14, 'UNAVAILABLE: the browser gives the page no answer to read');
  assert.equal(result.httpStatus, 0);
  assert.ok(logs.some((l) => /CORS|Access-Control/i.test(l)), `the browser reports the CORS refusal:\n${logs.join('\n')}`);
  // What the browser saw: 403 without CORS headers for the refused origin, CORS headers for the allowed one.
  const preflight = (o) => fetch(`${gw.baseUrl}/pseudo/v1/domains/demo_v1/pseudonymize`, {
    method: 'OPTIONS',
    headers: { origin: o, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-pseudonymizer-principal' },
  });
  const no = await preflight(origin(refused));
  assert.equal(no.status, 403);
  assert.equal(no.headers.get('access-control-allow-origin'), null);
  const yes = await preflight(origin(allowed));
  assert.ok(yes.status === 200 || yes.status === 204, `preflight ${yes.status}`);
  assert.equal(yes.headers.get('access-control-allow-origin'), origin(allowed));
});

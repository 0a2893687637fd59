// The environment of the integration tests: the built Go server in
// development mode with its REST gateway on, and the Go interop helper
// (test/gointerop). scripts/test-typescript.sh builds both and names them:
//
//	PSEUDONYMIZER_BIN  the pseudonymizer binary (go build ./cmd/pseudonymizer)
//	GOINTEROP_BIN      the helper (go build ./sdk/typescript/test/gointerop)
//
// Everything listens on 127.0.0.1 on free ports; waits are for events (a log
// line, a process exit), each bounded by a timeout.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function requireEnv(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run the integration tests with scripts/test-typescript.sh, which builds the Go binaries they need`);
  }
  return v;
}

// gointerop runs the Go helper with args and a JSON value on stdin, and
// returns its JSON answer.
export function gointerop(args, input) {
  const bin = requireEnv('GOINTEROP_BIN');
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`gointerop ${args.join(' ')}: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout));
      } catch (e) {
        reject(new Error(`gointerop ${args.join(' ')}: not JSON: ${stdout}`));
      }
    });
    child.stdin.end(input === undefined ? '' : JSON.stringify(input));
  });
}

// startServer prepares a key file (demo_v1 and demo_v2, see gointerop
// setup) and starts the pseudonymizer in development mode with the REST
// gateway, and waits for its "serving" log record. It returns the gRPC and
// REST addresses, the data directory and stop().
export async function startServer({ origins = [], args = [], timeoutMs = 60_000 } = {}) {
  const bin = requireEnv('PSEUDONYMIZER_BIN');
  const dir = await mkdtemp(join(tmpdir(), 'pseudonymizer-ts-'));
  const dataDir = join(dir, 'data');
  await gointerop(['setup', '-data-dir', dataDir]);
  const argv = ['-dev', '-data-dir', dataDir, '-listen', '127.0.0.1:0', '-metrics-listen', '127.0.0.1:0', '-rest-listen', '127.0.0.1:0', ...args];
  if (origins.length) argv.push('-rest-cors-origins', origins.join(','));
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let out = '';
  child.stdout.on('data', (b) => (out += b));
  const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve(`${code ?? sig}`)));
  const serving = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server printed no serving record within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    child.stderr.on('data', (b) => {
      log += b;
      for (const line of log.split('\n')) {
        if (!line.includes('"msg":"pseudonymizer: serving"')) continue;
        clearTimeout(timer);
        resolve(JSON.parse(line));
        return;
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}) before serving:\n${log}\n${out}`));
    });
  });
  if (!serving.rest) throw new Error(`the serving record names no REST address: ${JSON.stringify(serving)}`);
  return {
    grpc: serving.grpc,
    rest: serving.rest,
    baseUrl: `http://${serving.rest}`,
    dataDir,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

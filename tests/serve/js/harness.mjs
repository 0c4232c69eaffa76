// Runs one JavaScript suite against a real `assistd serve`:
//   1. installs the suite's package.json (npm ci against its package-lock.json)
//      into CACHE_DIR, once per content of those two files;
//   2. starts ASSISTD serve on 127.0.0.1 with --port 0 and reads the port from
//      its banner;
//   3. runs the suite's *.test.mjs files with `node --test`, passing the server
//      and the installed packages through the environment (see common.mjs);
//   4. stops the server with SIGTERM and checks that it exits 0.
// Exit status: the suite's, 77 (ctest SKIP_RETURN_CODE) when a file the suite
// declares in package.json "assistd.requires" is missing, 1 on a harness failure.
//
// usage: node harness.mjs SUITE_DIR CACHE_DIR ASSISTD MODEL WEB_DIR ARTIFACTS_DIR
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const [suiteDir, cacheDir, assistd, model, webDir, artifactsDir] = process.argv.slice(2);
if (!artifactsDir) {
  console.error("usage: node harness.mjs SUITE_DIR CACHE_DIR ASSISTD MODEL WEB_DIR ARTIFACTS_DIR");
  process.exit(1);
}
const SKIP = 77;
const NPM_TIMEOUT_MS = 300_000;   // a cold install on a slow network
const BANNER_TIMEOUT_MS = 30_000; // model load + bind
const SUITE_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 20_000;

function fail(message) {
  console.error("harness: " + message);
  process.exit(1);
}

const manifest = JSON.parse(fs.readFileSync(path.join(suiteDir, "package.json"), "utf8"));
for (const required of (manifest.assistd && manifest.assistd.requires) || []) {
  if (!fs.existsSync(required)) {
    console.log(`SKIP: ${required} is missing (scripts/install-deps.sh installs it)`);
    process.exit(SKIP);
  }
}

// 1. npm packages, reinstalled only when package.json or the lock changed.
function installPackages() {
  const files = ["package.json", "package-lock.json"].filter((f) => fs.existsSync(path.join(suiteDir, f)));
  const hash = createHash("sha256");
  for (const f of files) hash.update(f + "\0" + fs.readFileSync(path.join(suiteDir, f)));
  const digest = hash.digest("hex");
  const stamp = path.join(cacheDir, ".installed");
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8") === digest &&
      fs.existsSync(path.join(cacheDir, "node_modules"))) return;
  fs.rmSync(cacheDir, { recursive: true, force: true });
  fs.mkdirSync(cacheDir, { recursive: true });
  for (const f of files) fs.copyFileSync(path.join(suiteDir, f), path.join(cacheDir, f));
  const command = files.includes("package-lock.json") ? "ci" : "install";
  console.log(`harness: npm ${command} in ${cacheDir}`);
  const started = Date.now();
  const r = spawnSync("npm", [command, "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"], {
    cwd: cacheDir, stdio: "inherit", timeout: NPM_TIMEOUT_MS,
  });
  if (r.error || r.status !== 0)
    fail(`npm ${command} failed (${r.error ? r.error.message : "exit " + r.status}); ` +
         "the suites need the npm registry once, then run from this cache");
  fs.writeFileSync(stamp, digest);
  console.log(`harness: npm ${command} took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

// 2. The server.
function startServer() {
  const args = ["serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--threads", "1",
                "--precision", "fp32", "--web-dir", webDir];
  const child = spawn(assistd, args, { stdio: ["ignore", "inherit", "pipe"] });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("no banner within " + BANNER_TIMEOUT_MS + " ms:\n" + log));
    }, BANNER_TIMEOUT_MS);
    child.stderr.on("data", (data) => {
      process.stderr.write(data);  // the server's log stays in the test's output
      if (log === null) return;
      log += data;
      const m = /http:\/\/127\.0\.0\.1:(\d+)\s/.exec(log);
      if (m) {
        clearTimeout(timer);
        log = null;
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`assistd serve exited (${signal || code}) before it listened:\n${log}`));
    });
  });
}

function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    child.once("exit", (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
  });
}

// 3. The suite.
function runSuite(port) {
  const tests = fs.readdirSync(suiteDir).filter((f) => f.endsWith(".test.mjs")).map((f) => path.join(suiteDir, f));
  if (tests.length === 0) fail("no *.test.mjs in " + suiteDir);
  const child = spawn(process.execPath, ["--test", "--test-reporter=spec", "--test-concurrency=1", ...tests], {
    stdio: "inherit",
    env: {
      ...process.env,
      ASSISTD_URL: `http://127.0.0.1:${port}`,
      ASSISTD_NPM_DIR: cacheDir,
      ASSISTD_ARTIFACTS: artifactsDir,
    },
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      console.error(`harness: the suite ran past ${SUITE_TIMEOUT_MS} ms; killing it`);
      child.kill("SIGKILL");
    }, SUITE_TIMEOUT_MS);
    child.on("exit", (code, signal) => { clearTimeout(timer); resolve(signal ? 1 : code); });
  });
}

installPackages();
let server;
try {
  server = await startServer();
} catch (e) {
  fail(e.message);
}
// ctest's timeout, a Ctrl-C or a harness error must not leave the server behind.
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"])
  process.on(sig, () => process.exit(1));
process.on("exit", () => {
  if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
});

const started = Date.now();
const status = await runSuite(server.port);
console.log(`harness: suite finished in ${((Date.now() - started) / 1000).toFixed(1)} s, status ${status}`);

// 4. Drain and exit 0, like any SIGTERM.
server.child.kill("SIGTERM");
const exited = await waitExit(server.child, STOP_TIMEOUT_MS);
if (!exited) {
  server.child.kill("SIGKILL");
  fail(`assistd serve did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM`);
}
if (exited.code !== 0) fail(`assistd serve exited with ${exited.signal || exited.code} after SIGTERM`);
process.exit(status);

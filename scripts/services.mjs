// The local EnOS stack for the browser tests and `make demo`: Debian's mosquitto (MQTT over
// TCP and over WebSocket), websockify (the WebSocket bridge a TCP-only broker such as EnOS
// needs), the enos-sim binary, and the page server. Node only, no dependencies.
//
//   freePort(preferred?)                     -> port (preferred if it is free)
//   startBroker({ tcpPort?, wsPort? })       -> { tcpPort, wsPort, wsUrl, mqtt, restart, ... }
//   startBridge({ listenPort?, tcpPort })    -> { port, wsUrl, ... }
//   startEnosSim({ configPath | config, baseDir?, mqtt, http? })
//       -> { httpUrl, adminUrl, configPath, createTask, tasks, task, devices, firmwares,
//            waitForTask, ... }
//   startPageServer({ port? })               -> { url, ... }
//   stopAll()
//
// Every handle also has `stop()` (resolves once the child has exited), `log()` (the end of
// its stderr) and `exited` (a promise of how the child ended, e.g. "exit 1", for noticing a
// crash).
//
// Every child is tracked until it exits: `stop()` sends SIGTERM and resolves once it has
// exited (SIGKILL after 3 s). When this process exits, every child still running gets
// SIGTERM; SIGINT and SIGTERM stop them all and then end this process (exit 130 / 143, or
// `process.exitCode` if the program set one), so a Ctrl-C or a test runner's kill leaves
// nothing behind; only a SIGKILL of this process can orphan a child. Temp dirs (configs)
// go with their handle's stop() or this process. Errors about a child include the end of
// its stderr.
import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const fixtures = join(root, "firmware-fixtures", "files");
const MOSQUITTO = "/usr/sbin/mosquitto";
const WEBSOCKIFY = "websockify";
/** The enos-sim binary: `ENOS_SIM`, else the workspace's debug build. */
export const ENOS_SIM = process.env.ENOS_SIM ?? join(root, "target", "debug", "enos-sim");

const START_TIMEOUT = 15_000;
const STOP_GRACE = 3_000;
const STDERR_KEEP = 64 * 1024;

const live = new Set();
const scratch = new Set();
let hooked = false;

/** Kills what is left when this process ends and removes its temp dirs; installed once. */
function hookExit() {
  if (hooked) return;
  hooked = true;
  process.on("exit", () => {
    for (const proc of live) proc.child.kill("SIGTERM");
    for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  });
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ]) {
    process.on(signal, () => {
      stopAll().finally(() => process.exit(process.exitCode ?? code));
    });
  }
}

/** A fresh temp dir, removed by `dropScratch` or when this process exits. */
async function makeScratch(prefix) {
  hookExit();
  const dir = await mkdtemp(join(tmpdir(), prefix));
  scratch.add(dir);
  return dir;
}

async function dropScratch(dir) {
  if (!dir) return;
  scratch.delete(dir);
  await rm(dir, { recursive: true, force: true });
}

/** Starts `cmd args` as a tracked child; its stderr's last 64 KiB are kept. */
function launch(name, cmd, args, { stdout = "ignore" } = {}) {
  hookExit();
  const child = spawn(cmd, args, { stdio: ["ignore", stdout, "pipe"] });
  const proc = { name, child, stderr: "", done: false, how: "" };
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    proc.stderr = (proc.stderr + d).slice(-STDERR_KEEP);
  });
  live.add(proc);
  proc.exited = new Promise((resolveExit) => {
    const finish = (how) => {
      if (proc.done) return;
      proc.done = true;
      proc.how = how;
      live.delete(proc);
      resolveExit();
    };
    child.once("exit", (code, signal) => finish(signal ? `killed by ${signal}` : `exit ${code}`));
    // Spawning itself failed (ENOENT and the like): there is no exit event.
    child.once("error", (e) => finish(`could not start: ${e.message}`));
  });
  return proc;
}

/** An Error naming the child, how it ended if it has, and the end of its stderr. */
function failure(proc, what) {
  const state = proc.done ? ` (${proc.how})` : "";
  const stderr = proc.stderr.trim();
  return new Error(`${proc.name}${state}: ${what}${stderr ? `\n--- ${proc.name} stderr ---\n${stderr}` : ""}`);
}

/** SIGTERM, then SIGKILL after the grace period; resolves once the child has exited. */
async function stopProc(proc) {
  if (!proc || proc.done) return;
  proc.child.kill("SIGTERM");
  let timer;
  const late = new Promise((r) => (timer = setTimeout(r, STOP_GRACE, "late")));
  if ((await Promise.race([proc.exited, late])) === "late") {
    proc.child.kill("SIGKILL");
    await proc.exited;
  }
  clearTimeout(timer);
}

/** Stops every child started here that is still running. */
export async function stopAll() {
  await Promise.all([...live].map(stopProc));
}

/** Resolves `true` when something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port) {
  return new Promise((resolveOpen) => {
    const socket = new Socket();
    socket.once("connect", () => (socket.destroy(), resolveOpen(true)));
    socket.once("error", () => resolveOpen(false));
    socket.connect(port, "127.0.0.1");
  });
}

/** Waits until every port accepts; stops the child and throws if it exits or is late. */
async function waitForPorts(proc, ports) {
  const deadline = Date.now() + START_TIMEOUT;
  for (const port of ports) {
    for (;;) {
      if (proc.done) throw failure(proc, `exited before listening on ${port}`);
      if (await accepts(port)) break;
      if (Date.now() > deadline) {
        await stopProc(proc);
        throw failure(proc, `did not listen on ${port} within ${START_TIMEOUT} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Resolves to the child's first stdout line; stops the child and throws if it exits or is late. */
function firstLine(proc) {
  return new Promise((resolveLine, reject) => {
    let out = "";
    let settled = false;
    const fail = async (what) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      await stopProc(proc);
      reject(failure(proc, what));
    };
    const timer = setTimeout(() => fail(`printed no line within ${START_TIMEOUT} ms`), START_TIMEOUT);
    proc.child.stdout.setEncoding("utf8");
    proc.child.stdout.on("data", (d) => {
      if (out.includes("\n")) return;
      out += d;
      const nl = out.indexOf("\n");
      if (nl >= 0 && !settled) {
        settled = true;
        clearTimeout(timer);
        resolveLine(out.slice(0, nl).trim());
      }
    });
    proc.exited.then(() => fail("exited before its first line"));
  });
}

/**
 * A 127.0.0.1 port nothing listens on now: `preferred` if it is free (and not 0), else
 * any free one.
 */
export async function freePort(preferred = 0) {
  const tryPort = (port) =>
    new Promise((resolvePort, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        const { port: bound } = s.address();
        s.close(() => resolvePort(bound));
      });
    });
  if (preferred) {
    try {
      return await tryPort(preferred);
    } catch (e) {
      if (e.code !== "EADDRINUSE" && e.code !== "EACCES") throw e;
    }
  }
  return tryPort(0);
}

/**
 * Starts mosquitto with a TCP listener and a websockets listener, both on 127.0.0.1 only,
 * anonymous logins allowed, no persistence; resolves once both accept. Ports default to
 * free ones. `restart()` stops the broker and starts it again on the same ports (a broker
 * restart in the middle of a task) and resolves once it listens again; subscriptions and
 * sessions are gone, as after a real restart.
 */
export async function startBroker({ tcpPort, wsPort } = {}) {
  tcpPort ??= await freePort();
  wsPort ??= await freePort();
  const dir = await makeScratch("otaweb-mosquitto-");
  const conf = join(dir, "mosquitto.conf");
  // TOOLCHAIN.md: socket_domain ipv4 keeps the websockets listener on 127.0.0.1 only.
  await writeFile(
    conf,
    [
      "allow_anonymous true",
      "persistence false",
      "log_dest stderr",
      `listener ${tcpPort} 127.0.0.1`,
      "protocol mqtt",
      `listener ${wsPort} 127.0.0.1`,
      "socket_domain ipv4",
      "protocol websockets",
      "",
    ].join("\n"),
  );
  let proc;
  const up = async () => {
    proc = launch("mosquitto", MOSQUITTO, ["-c", conf]);
    await waitForPorts(proc, [tcpPort, wsPort]);
  };
  try {
    await up();
  } catch (e) {
    await dropScratch(dir);
    throw e;
  }
  return {
    tcpPort,
    wsPort,
    wsUrl: `ws://127.0.0.1:${wsPort}`,
    /** `HOST:PORT` of the TCP listener, for enos-sim's `mqtt`. */
    mqtt: `127.0.0.1:${tcpPort}`,
    log: () => proc.stderr,
    get exited() {
      return proc.exited.then(() => proc.how);
    },
    async stop() {
      await stopProc(proc);
      await dropScratch(dir);
    },
    async restart() {
      await stopProc(proc);
      await up();
    },
  };
}

/** Starts websockify on 127.0.0.1:`listenPort` (default free) in front of the broker's TCP port. */
export async function startBridge({ listenPort, tcpPort }) {
  if (!tcpPort) throw new Error("startBridge: tcpPort is required");
  listenPort ??= await freePort();
  const proc = launch("websockify", WEBSOCKIFY, [`127.0.0.1:${listenPort}`, `127.0.0.1:${tcpPort}`]);
  await waitForPorts(proc, [listenPort]);
  return {
    port: listenPort,
    wsUrl: `ws://127.0.0.1:${listenPort}`,
    log: () => proc.stderr,
    exited: proc.exited.then(() => proc.how),
    stop: () => stopProc(proc),
  };
}

/**
 * Starts the enos-sim binary against the broker at `mqtt` (`HOST:PORT`) with HTTP on
 * 127.0.0.1:`http` (0 = any free port) and resolves once it printed
 * `enos-sim http=URL mqtt=connected`, i.e. once it hears devices.
 *
 * The config is a file (`configPath`; relative firmware paths are from its directory) or an
 * object (`config`), written to a temporary file with every relative firmware path made
 * absolute from `baseDir` (default: firmware-fixtures/files/, where the test images are).
 *
 * The admin helpers call the sim's /admin API (enos-sim/src/http.rs) and throw on a non-2xx
 * answer with its message: `createTask({ productKey, deviceKey, version, policy = "push" })`
 * resolves to the created task, `tasks()`, `devices()`, `firmwares()` to arrays, `task(id)` to
 * one task; `waitForTask(id, predicate, timeoutMs = 10000)` polls until `predicate(task)` (or,
 * given a string, until the task's status is that string) and resolves to the task.
 */
export async function startEnosSim({ configPath, config, baseDir = fixtures, mqtt, http = 0 }) {
  if ((configPath === undefined) === (config === undefined)) {
    throw new Error("startEnosSim: give exactly one of configPath and config");
  }
  if (!mqtt) throw new Error('startEnosSim: mqtt ("127.0.0.1:PORT") is required');
  if (!existsSync(ENOS_SIM)) {
    throw new Error(`${ENOS_SIM} is missing: run \`cargo build -p enos-sim\` (or set ENOS_SIM)`);
  }
  let dir;
  if (config !== undefined) {
    dir = await makeScratch("otaweb-enos-sim-");
    const copy = structuredClone(config);
    for (const product of copy.products ?? []) {
      for (const fw of product.firmwares ?? []) {
        if (typeof fw.path === "string" && !isAbsolute(fw.path)) fw.path = resolve(baseDir, fw.path);
      }
    }
    configPath = join(dir, "enos-sim.json");
    await writeFile(configPath, JSON.stringify(copy, null, 2));
  }
  const cleanup = () => dropScratch(dir);
  const proc = launch("enos-sim", ENOS_SIM, ["--config", configPath, "--mqtt", mqtt, "--http", String(http)], {
    stdout: "pipe",
  });
  let httpUrl;
  try {
    const line = await firstLine(proc);
    const m = /^enos-sim http=(\S+) mqtt=connected$/.exec(line);
    if (!m) {
      await stopProc(proc);
      throw failure(proc, `unexpected first line: ${line}`);
    }
    httpUrl = m[1];
  } catch (e) {
    await cleanup();
    throw e;
  }

  const call = async (method, path, body) => {
    const res = await fetch(`${httpUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) throw new Error(`enos-sim ${method} ${path}: HTTP ${res.status}: ${json?.message ?? text}`);
    return json;
  };
  const task = (id) => call("GET", `/admin/tasks/${encodeURIComponent(id)}`);
  return {
    httpUrl,
    /** The `--admin URL` of `enos-sim task|devices|status` (the same server). */
    adminUrl: httpUrl,
    configPath,
    log: () => proc.stderr,
    exited: proc.exited.then(() => proc.how),
    async stop() {
      await stopProc(proc);
      await cleanup();
    },
    createTask: ({ productKey, deviceKey, version, policy = "push" }) =>
      call("POST", "/admin/tasks", { productKey, deviceKey, version, policy }),
    tasks: async () => (await call("GET", "/admin/tasks")).tasks,
    task,
    devices: async () => (await call("GET", "/admin/devices")).devices,
    firmwares: async () => (await call("GET", "/admin/firmwares")).firmwares,
    async waitForTask(id, predicate, timeoutMs = 10_000) {
      const done = typeof predicate === "string" ? (t) => t.status === predicate : predicate;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const t = await task(id);
        if (done(t)) return t;
        if (Date.now() > deadline) {
          throw new Error(`enos-sim task ${id}: condition not met within ${timeoutMs} ms; last: ${JSON.stringify(t)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Starts scripts/serve.mjs (the page, pkg/, fixtures) on 127.0.0.1:`port` (0 = any free port). */
export async function startPageServer({ port = 0 } = {}) {
  const proc = launch("serve.mjs", process.execPath, [join(root, "scripts", "serve.mjs"), "--port", String(port)], {
    stdout: "pipe",
  });
  const url = await firstLine(proc);
  return { url, log: () => proc.stderr, exited: proc.exited.then(() => proc.how), stop: () => stopProc(proc) };
}

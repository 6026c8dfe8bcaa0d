// A real chatgw for node tests: a worker and a gateway as child processes, on a free port, with a
// key prefix and data files of their own (the node twin of shared/testing/stack.py).
//
// Environment: CHATGW_TEST_PYTHON (default: the checkout's .venv/bin/python, else python3) and
// CHATGW_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const VENV_PYTHON = join(ROOT, ".venv", "bin", "python");
export const PYTHON = process.env.CHATGW_TEST_PYTHON || (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");
export const REDIS_URL = process.env.CHATGW_TEST_REDIS_URL || "redis://127.0.0.1:6379/0";

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export async function waitFor(predicate, { timeoutMs = 30000, intervalMs = 50, what = "a condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

class Proc {
  constructor(role, env, logPath) {
    this.role = role;
    this.logPath = logPath;
    const log = openSync(logPath, "a");
    this.child = spawn(PYTHON, ["-m", "cli.main", role], { cwd: ROOT, env, stdio: ["ignore", log, log] });
    this.exited = new Promise((r) => this.child.once("exit", r));
  }

  alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  output() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async stop(signal = "SIGTERM", timeoutMs = 15000) {
    if (!this.alive()) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class Stack {
  constructor(settings = {}) {
    this.prefix = `tjs${randomBytes(5).toString("hex")}`;
    this.dir = mkdtempSync(join(tmpdir(), "chatgw-js-"));
    this.settings = settings;
    this.gateway = null;
    this.worker = null;
    this.port = null;
    this._gateways = 0;
  }

  env(extra = {}) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CHATGW_")));
    return {
      ...env,
      CHATGW_REDIS_URL: REDIS_URL,
      CHATGW_KEY_PREFIX: this.prefix,
      CHATGW_OFFLINE_TOKEN_DELAY_MS: "5",
      CHATGW_LOG_LEVEL: "info",
      CHATGW_CHECKPOINT_PATH: join(this.dir, "checkpoints.sqlite"),
      CHATGW_INDEX_PATH: join(this.dir, "index"),
      PYTHONPATH: ROOT,
      ...this.settings,
      ...extra,
    };
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port = await freePort();
    this.worker = new Proc("worker", this.env(), join(this.dir, "worker.log"));
    await this.startGateway();
    await waitFor(() => this.worker.output().includes("ready (concurrency") || !this.worker.alive(), {
      what: "worker boot",
    });
    if (!this.worker.alive()) throw new Error(`worker died:\n${this.worker.output()}`);
  }

  /** A gateway on this stack's port (the same one after a restart). */
  async startGateway() {
    const index = this._gateways++;
    this.gateway = new Proc("gateway", this.env({ CHATGW_PORT: String(this.port) }), join(this.dir, `gateway-${index}.log`));
    await waitFor(async () => (await this.ready()) || !this.gateway.alive(), { what: "gateway ready" });
    if (!this.gateway.alive()) throw new Error(`gateway died:\n${this.gateway.output()}`);
  }

  async ready() {
    try {
      const response = await fetch(`${this.http}/readyz`, { signal: AbortSignal.timeout(1000) });
      return response.status === 200;
    } catch {
      return false;
    }
  }

  async stop() {
    await Promise.all([this.gateway?.stop(), this.worker?.stop()]);
    // The key prefix is this stack's alone: remove what it left in Redis.
    spawnSync(
      PYTHON,
      [
        "-c",
        "import sys, redis; r = redis.Redis.from_url(sys.argv[1]); " +
          "keys = list(r.scan_iter(sys.argv[2] + ':*', count=1000)); keys and r.delete(*keys)",
        REDIS_URL,
        this.prefix,
      ],
      { cwd: ROOT, stdio: "ignore", timeout: 20000 },
    );
    if (!process.env.CHATGW_TEST_KEEP_LOGS) rmSync(this.dir, { recursive: true, force: true });
  }
}

// What the browser tests run against: the real `ferrite` binary on a free
// loopback port with a fresh data directory, a real `ferrite-connector`
// simulated gateway, and Debian's Chromium driven by playwright-core.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target');
const binary = (name) => join(target, process.env.FERRITE_E2E_PROFILE ?? 'debug', name);
export const screenshots = join(root, 'target', 'dashboard-screenshots');
export const ADMIN_PASSWORD = 'e2e-admin-password';

export async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
    server.on('error', fail);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for `probe` to return something truthy, up to `ms`. */
export async function eventually(what, ms, probe) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
}

function run(name, args, env) {
  const child = spawn(binary(name), args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.output = () => output;
  return child;
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

export class Server {
  constructor(port, dir, env = {}) {
    this.port = port;
    this.dir = dir;
    this.env = env;
    this.origin = `http://127.0.0.1:${port}`;
  }

  /** A fresh server; `env` adds FERRITE_* settings. */
  static async start(env = {}) {
    const server = new Server(await freePort(), mkdtempSync(join(tmpdir(), 'ferrite-e2e-')), env);
    await server.boot();
    return server;
  }

  async boot() {
    this.child = run('ferrite', ['serve'], {
      FERRITE_LISTEN: `127.0.0.1:${this.port}`,
      FERRITE_DATA_DIR: join(this.dir, 'data'),
      FERRITE_ADMIN_PASSWORD: ADMIN_PASSWORD,
      FERRITE_LOG: 'warn',
      ...this.env,
    });
    await eventually('the server to answer /healthz', 30_000, async () => {
      if (this.child.exitCode !== null) throw new Error(`ferrite exited:\n${this.child.output()}`);
      return (await fetch(`${this.origin}/healthz`)).ok;
    });
  }

  async stop() {
    await stopChild(this.child);
  }

  async restart() {
    await this.stop();
    await this.boot();
  }

  async gql(token, query, variables = {}) {
    const response = await fetch(`${this.origin}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  }

  async login(username, password) {
    const data = await this.gql(null, 'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }', { u: username, p: password });
    return data.login.accessToken;
  }

  async apiKey(token, permission = 'WRITE') {
    const data = await this.gql(token, 'mutation($p: Permission!) { createApiKey(name: "e2e", permission: $p) { secret } }', { p: permission });
    return data.createApiKey.secret;
  }

  async cleanup() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A simulated gateway: a fast thermometer and a relay that answers `set`. */
export class Gateway {
  static async start(server, apiKey, id = 'e2e-gateway', devices = DEFAULT_DEVICES) {
    const gateway = new Gateway();
    const dir = join(server.dir, id);
    mkdirSync(dir, { recursive: true });
    const config = join(dir, 'connector.toml');
    writeFileSync(config, `url = "ws://127.0.0.1:${server.port}/graphql"
api_key = "${apiKey}"
connector_id = "${id}"
[outbox]
path = "${join(dir, 'outbox.db')}"
[timeouts]
reconnect_min_seconds = 0.2
reconnect_max_seconds = 1.0
${devices}`);
    gateway.child = run('ferrite-connector', ['--config', config, 'run'], {});
    return gateway;
  }

  async stop() {
    await stopChild(this.child);
  }
}

const DEFAULT_DEVICES = `
[[device]]
id = "greenhouse-thermometer"
kind = "thermometer"
name = "Greenhouse thermometer"
location = "greenhouse"
interval_seconds = 0.5

[[device]]
id = "pump-relay"
kind = "relay"
name = "Pump relay"
location = "greenhouse"
`;

/** Debian's Chromium (Playwright cannot download its own here). */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A page that records console errors and every request that leaves the
 * server's origin; `check()` fails the test on either.
 */
export async function watchedPage(context, server) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('request', (request) => {
    const url = new URL(request.url());
    const local = url.host === new URL(server.origin).host || url.protocol === 'blob:' || url.protocol === 'data:';
    if (!local) problems.push(`request left the origin: ${request.url()}`);
  });
  page.problems = problems;
  return page;
}

export async function signIn(page, server, username = 'admin', password = ADMIN_PASSWORD, path = '/devices') {
  await page.goto(`${server.origin}${path}`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

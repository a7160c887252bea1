// A web app on another origin, in the real browser: with its origin in
// `[http] cors_origins` it queries /graphql and opens the WebSocket; a page
// on an origin not listed can do neither.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Server, browser, freePort } from './harness.mjs';

let server;
let chromium;
const apps = [];

/** An origin serving an empty page, as a web app's dev server would. */
async function appOrigin() {
  const port = await freePort();
  const app = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>another app</title>');
  });
  await new Promise((resolve) => app.listen(port, '127.0.0.1', resolve));
  apps.push(app);
  return `http://127.0.0.1:${port}`;
}

let listed;
let unlisted;

before(async () => {
  listed = await appOrigin();
  unlisted = await appOrigin();
  server = await Server.start({ FERRITE_HTTP__CORS_ORIGINS: JSON.stringify([listed]) });
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.cleanup();
  for (const app of apps) app.close();
});

/** In a page of `origin`: a login over fetch, then a query with the token, then the socket. */
async function tryFrom(origin) {
  const context = await chromium.newContext();
  const page = await context.newPage();
  await page.goto(origin);
  const result = await page.evaluate(async ({ api, password }) => {
    const post = (body, token) => fetch(`${api}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    }).then((r) => r.json());
    let me = null;
    try {
      const login = await post({ query: 'mutation($p: String!) { login(username: "admin", password: $p) { accessToken } }', variables: { p: password } });
      const token = login.data.login.accessToken;
      me = (await post({ query: '{ me { user { username } } }' }, token)).data.me.user.username;
    } catch (error) {
      me = `refused: ${error.message}`;
    }
    const socket = await new Promise((resolve) => {
      const ws = new WebSocket(`${api.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
      ws.onopen = () => { ws.close(); resolve('open'); };
      ws.onerror = () => resolve('refused');
    });
    return { me, socket };
  }, { api: server.origin, password: ADMIN_PASSWORD });
  await context.close();
  return result;
}

test('a listed origin queries /graphql and opens its WebSocket; another origin does neither', async () => {
  assert.deepEqual(await tryFrom(listed), { me: 'admin', socket: 'open' });
  const other = await tryFrom(unlisted);
  assert.match(other.me, /^refused: /);
  assert.equal(other.socket, 'refused');
});

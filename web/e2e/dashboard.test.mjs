// The dashboard as a user sees it, in a real Chromium, against the real
// server and a real simulated gateway.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Gateway, Server, browser, eventually, screenshots, signIn, watchedPage } from './harness.mjs';

let server;
let gateway;
let chromium;
let context;
let page;

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  server = await Server.start();
  const admin = await server.login('admin', ADMIN_PASSWORD);
  gateway = await Gateway.start(server, await server.apiKey(admin));
  chromium = await browser();
  context = await chromium.newContext({ colorScheme: 'light', viewport: { width: 1280, height: 860 } });
  page = await watchedPage(context, server);
});

after(async () => {
  await gateway?.stop();
  await chromium?.close();
  await server?.cleanup();
});

test('the page is served from the binary with a strict CSP; assets are long-cached', async () => {
  const index = await fetch(`${server.origin}/devices/some-deep-link`);
  assert.equal(index.status, 200);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const csp = index.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  const html = await index.text();
  assert.doesNotMatch(html, /<script>(?!<\/script>)/, 'no inline script');
  const script = html.match(/src="(\/assets\/[^"]+\.js)"/)[1];
  // node:http, not fetch: fetch does not let a caller choose Accept-Encoding.
  const asset = await new Promise((done, fail) =>
    get(`${server.origin}${script}`, { headers: { 'accept-encoding': 'br, gzip' } }, (response) => {
      response.resume();
      done(response);
    }).on('error', fail));
  assert.equal(asset.statusCode, 200);
  assert.match(asset.headers['cache-control'], /immutable/);
  assert.equal(asset.headers['content-encoding'], 'br');
});

test('a wrong password shows the server message; the deep link survives sign-in', async () => {
  await signIn(page, server, 'admin', 'not-the-password', '/events?service=temperature');
  await page.getByRole('alert').filter({ hasText: 'wrong username or password' }).waitFor();
  assert.match(await page.getByRole('alert').textContent(), /UNAUTHENTICATED/);
  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Events' }).waitFor();
  assert.equal(new URL(page.url()).search, '?service=temperature');
  // Live readings of the thermometer arrive in the log.
  await page.getByRole('table', { name: 'Events' }).getByRole('cell', { name: 'temperature' }).first().waitFor();
  // The refresh token is nowhere page script can read it.
  assert.equal(await page.evaluate(() => document.cookie), '');
  const cookies = await context.cookies();
  const refresh = cookies.find((c) => c.name === 'ferrite_refresh');
  assert.ok(refresh?.httpOnly && refresh.sameSite === 'Strict' && refresh.path === '/auth');
});

test("the gateway's devices are listed ONLINE, live", async () => {
  await page.getByRole('link', { name: 'Devices' }).click();
  const table = page.getByRole('table', { name: 'Devices' });
  const row = table.getByRole('row').filter({ hasText: 'Greenhouse thermometer' });
  await row.getByText('ONLINE').waitFor();
  await table.getByRole('row').filter({ hasText: 'Pump relay' }).getByText('ONLINE').waitFor();
  await page.getByLabel('Search').fill('pump');
  await eventually('the filter to leave one device', 5_000, async () => (await table.getByRole('row').count()) === 2);
  await page.getByLabel('Search').fill('');
  await page.screenshot({ path: join(screenshots, 'devices-light.png'), fullPage: true });
});

test('a device page charts a reading live and sends a command that SUCCEEDS', async () => {
  await page.getByRole('link', { name: 'Greenhouse thermometer' }).click();
  await page.getByRole('heading', { name: /Greenhouse thermometer/ }).waitFor();
  await page.getByRole('checkbox', { name: 'celsius' }).check();
  await page.getByRole('img', { name: /Chart of temperature.celsius/ }).locator('canvas').waitFor();
  assert.match(page.url(), /lines=temperature%3Acelsius|lines=temperature:celsius/);
  await page.screenshot({ path: join(screenshots, 'device-light.png'), fullPage: true });

  await page.getByRole('link', { name: '← Devices' }).click();
  await page.getByRole('link', { name: 'Pump relay' }).click();
  await page.getByLabel('Service').fill('set');
  await page.getByLabel('Payload (JSON)').fill('{"on": tru');
  await page.getByRole('button', { name: 'Send command' }).click();
  await page.getByRole('alert').filter({ hasText: 'not JSON' }).waitFor();
  await page.getByLabel('Payload (JSON)').fill('{"on": true}');
  await page.getByRole('button', { name: 'Send command' }).click();
  const commands = page.getByRole('table', { name: 'Commands' });
  await commands.getByText('SUCCEEDED').waitFor({ timeout: 15_000 });
  await commands.getByText('{"on":true}').first().waitFor();
});

test("a chart puts another device's value beside this one's", async () => {
  await page.getByRole('link', { name: 'Devices', exact: true }).click();
  await page.getByRole('link', { name: 'Greenhouse thermometer' }).click();
  await page.getByRole('checkbox', { name: 'celsius' }).check();
  const compare = page.getByRole('form', { name: 'Compare with another device' });
  await compare.getByLabel('Compare with').selectOption({ label: 'Pump relay' });
  // The relay reported {"on": true} after the command above.
  await compare.getByLabel('Value').selectOption('state:on');
  await compare.getByRole('button', { name: 'Add to chart' }).click();
  await page.getByRole('img', { name: 'Chart of temperature.celsius, Pump relay: state.on' }).locator('canvas').waitFor();
  assert.match(decodeURIComponent(page.url()), /lines=temperature:celsius,state:on@[0-9a-f-]{36}/);
  await page.getByRole('button', { name: 'Remove Pump relay: state.on from the chart' }).click();
  await page.getByRole('img', { name: 'Chart of temperature.celsius' }).waitFor();
});

test('Users: an administrator creates a user, promotes them and resets their password', async () => {
  await page.getByRole('link', { name: 'Users' }).click();
  const create = page.getByRole('form', { name: 'Create a user' });
  await create.getByLabel('Username').fill('bob');
  await create.getByLabel('Password').fill('bobs first password');
  await create.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('status').filter({ hasText: 'Created bob.' }).waitFor();
  await page.getByLabel('Role of bob').selectOption('ADMIN');
  await page.getByRole('status').filter({ hasText: 'bob is now ADMIN.' }).waitFor();
  // The last administrator cannot be demoted: the server's refusal is shown.
  await page.getByLabel('Role of bob').selectOption('MEMBER');
  await page.getByRole('status').filter({ hasText: 'bob is now MEMBER.' }).waitFor();
  await page.getByLabel('Role of admin').selectOption('MEMBER');
  await page.getByRole('alert').filter({ hasText: 'CONFLICT' }).waitFor();
  assert.equal(await page.getByLabel('Role of admin').inputValue(), 'ADMIN');
  await page.getByRole('button', { name: 'Reset the password of bob' }).click();
  await page.getByLabel('New password for bob').fill('set by the admin');
  await page.getByRole('button', { name: 'Set password' }).click();
  await page.getByRole('status').filter({ hasText: 'New password set for bob' }).waitFor();
  assert.ok(await server.login('bob', 'set by the admin'));
  // Disabled, bob cannot sign in; enabled, he can again; deleted, he is gone.
  await page.getByRole('button', { name: 'Disable bob' }).click();
  await page.getByRole('row').filter({ hasText: 'bob' }).getByText('disabled').waitFor();
  await assert.rejects(server.login('bob', 'set by the admin'), /disabled/);
  await page.getByRole('button', { name: 'Enable bob' }).click();
  await page.getByRole('status').filter({ hasText: 'bob is enabled again.' }).waitFor();
  assert.ok(await server.login('bob', 'set by the admin'));
  assert.equal(await page.getByRole('button', { name: 'Disable admin' }).count(), 0, 'no disabling oneself');
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: 'Delete bob' }).click();
  await page.getByRole('status').filter({ hasText: 'Deleted bob and everything they owned.' }).waitFor();
  await page.getByRole('row').filter({ hasText: 'bob' }).waitFor({ state: 'detached' });
});

test('API keys: the secret is shown once; revoking it works', async () => {
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByLabel('Name').fill('browser-made');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = await page.getByLabel('New key secret').textContent();
  assert.match(secret, /^frt_/);
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: 'Revoke browser-made' }).click();
  await page.getByRole('row').filter({ hasText: 'browser-made' }).getByText(/revoked/).waitFor();
});

test('GraphiQL comes from the binary and runs queries as the signed-in user', async () => {
  const graphiql = await watchedPage(context, server);
  await graphiql.goto(`${server.origin}/graphql`);
  await graphiql.getByRole('status').filter({ hasText: 'Signed in to the dashboard as admin' }).waitFor();
  const editor = graphiql.locator('.graphiql-query-editor .CodeMirror').first();
  await editor.click();
  await graphiql.keyboard.press('Control+A');
  await graphiql.keyboard.type('{ me { user { username role } } }');
  await graphiql.getByRole('button', { name: /Execute query/ }).click();
  await graphiql.locator('.result-window').getByText('"ADMIN"', { exact: true }).waitFor();
  // A subscription runs over the WebSocket with the same session.
  await editor.click();
  await graphiql.keyboard.press('Control+A');
  await graphiql.keyboard.type('subscription { events { service } }');
  await graphiql.getByRole('button', { name: /Execute query/ }).click();
  await graphiql.locator('.result-window').getByText('"temperature"', { exact: true }).first().waitFor({ timeout: 15_000 });
  // Nothing from a CDN, and no inline script or style the policy refused.
  assert.deepEqual(graphiql.problems, []);
  await graphiql.screenshot({ path: join(screenshots, 'graphiql.png') });
  await graphiql.close();
});

test('dark theme and a 360 px phone', async () => {
  const dark = await chromium.newContext({ colorScheme: 'dark', viewport: { width: 360, height: 740 } });
  const phone = await watchedPage(dark, server);
  await signIn(phone, server);
  await phone.getByRole('table', { name: 'Devices' }).getByText('ONLINE').first().waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
  // Each device's status is on screen, not behind a sideways scroll.
  for (const badge of await phone.getByRole('table', { name: 'Devices' }).getByText(/^(ONLINE|OFFLINE)$/).all()) {
    const box = await badge.boundingBox();
    assert.ok(box && box.x + box.width <= 360, `a status badge ends at ${box && box.x + box.width} px`);
  }
  await phone.screenshot({ path: join(screenshots, 'devices-dark-phone.png'), fullPage: true });
  assert.deepEqual(phone.problems, []);
  await dark.close();
});

test('the gateway stops: its devices turn OFFLINE, live', async () => {
  await page.getByRole('link', { name: 'Devices' }).click();
  const row = page.getByRole('table', { name: 'Devices' }).getByRole('row').filter({ hasText: 'Pump relay' });
  await row.getByText('ONLINE').waitFor();
  await gateway.stop();
  await row.getByText('OFFLINE').waitFor({ timeout: 15_000 });
  // Its status timeline: ONLINE on the gateway, then OFFLINE from it.
  await page.getByRole('link', { name: 'Pump relay' }).click();
  const history = page.getByRole('table', { name: 'Status history' });
  await history.getByRole('row').nth(1).getByText('OFFLINE').waitFor();
  assert.match(await history.getByRole('row').nth(2).textContent(), /ONLINE.*e2e-gateway/);
  assert.match(await page.getByRole('img', { name: /^Status from .*: (no record (< 1|\d+) %, )?ONLINE (< 1|\d+) %, OFFLINE (< 1|\d+) %$/ }).getAttribute('aria-label'), /OFFLINE/);
  await page.screenshot({ path: join(screenshots, 'device-offline-light.png'), fullPage: true });
  await page.getByRole('link', { name: 'API keys' }).click();
});

test('a reload keeps the session; sign-out ends it', async () => {
  await page.reload();
  await page.getByRole('heading', { name: 'API keys' }).waitFor();
  await page.getByRole('button', { name: /Sign out/ }).click();
  await page.getByRole('heading', { name: 'Sign in to Ferrite' }).waitFor();
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in to Ferrite' }).waitFor();
  assert.deepEqual(page.problems.filter((p) => !p.includes('401')), []);
});

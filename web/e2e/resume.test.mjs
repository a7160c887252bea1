// Losslessness across a server restart, seen in the event log, and tenant
// isolation as a member sees it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Server, browser, eventually, signIn, watchedPage } from './harness.mjs';

let server;
let chromium;

before(async () => {
  server = await Server.start();
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.cleanup();
});

async function publish(token, deviceId, n) {
  await server.gql(token, 'mutation($i: EventInput!) { publishEvent(input: $i) { id } }', {
    i: { deviceId, service: 'count', payload: { n }, idempotencyKey: `n-${n}` },
  });
}

/** The `n` of every event row in the log, as shown. */
async function shown(page) {
  return page.getByRole('table', { name: 'Events' }).locator('tbody tr td.payload').evaluateAll((cells) =>
    cells.map((c) => JSON.parse(c.textContent).n),
  );
}

test('the server restarted while the log is open: afterwards every event is there exactly once', async () => {
  const admin = await server.login('admin', ADMIN_PASSWORD);
  const device = (await server.gql(admin, 'mutation { registerDevice(input: {externalId: "counter"}) { id } }')).registerDevice.id;
  // Tall enough for the virtualised log to hold all 35 rows in the DOM.
  const context = await chromium.newContext({ viewport: { width: 1280, height: 2400 } });
  const page = await watchedPage(context, server);
  await signIn(page, server, 'admin', ADMIN_PASSWORD, '/events');
  await page.getByRole('heading', { name: 'Events' }).waitFor();
  await page.getByRole('status', { name: 'Connection: Live' }).waitFor();
  for (let n = 1; n <= 5; n++) await publish(admin, device, n);
  await eventually('the first five events', 10_000, async () => (await shown(page)).length === 5);

  // Every event the socket brings, by `n`: what was missed must come over
  // HTTP in pages, not as one WebSocket message per event.
  const overSocket = [];
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => {
    const message = JSON.parse(String(payload));
    if (message.type === 'next' && message.payload.data?.events) overSocket.push(message.payload.data.events.payload.n);
  }));

  await server.stop();
  await page.getByRole('status', { name: /Reconnecting/ }).waitFor();
  // Kept away (the browser offline) until the 25 are in; back online, it
  // reconnects at once.
  await context.setOffline(true);
  await server.boot();
  const again = await server.login('admin', ADMIN_PASSWORD);
  for (let n = 6; n <= 30; n++) await publish(again, device, n);
  await context.setOffline(false);
  await page.getByRole('status', { name: 'Connection: Live' }).waitFor({ timeout: 20_000 });
  await page.getByRole('note').filter({ hasText: 'Reconnected — caught up 25 events missed meanwhile' }).waitFor({ timeout: 10_000 });
  // The same count stays in view above the log, however far live events
  // push the marker down.
  await page.getByRole('status').filter({ hasText: /^Back online at .*: caught up 25 events missed meanwhile\.$/ }).waitFor();
  for (let n = 31; n <= 35; n++) await publish(again, device, n);
  const expected = Array.from({ length: 35 }, (_, i) => 35 - i);
  await eventually('all 35 events, once each', 15_000, async () => JSON.stringify(await shown(page)) === JSON.stringify(expected))
    .catch(async (error) => {
      throw new Error(`${error.message}; the log shows ${JSON.stringify(await shown(page))}`);
    });
  assert.deepEqual(overSocket, [31, 32, 33, 34, 35], 'after the outage only live events come over the socket');
  // Problems other than the reconnects' own (the socket and fetches failing
  // while the server was down) fail the test.
  const unexpected = page.problems.filter((p) => !/ERR_CONNECTION_REFUSED|WebSocket|Failed to load resource/.test(p));
  assert.deepEqual(unexpected, []);
  await context.close();
});

test("a member never sees another member's devices", async () => {
  const admin = await server.login('admin', ADMIN_PASSWORD);
  for (const name of ['alice', 'bob']) {
    await server.gql(admin, 'mutation($u: String!) { createUser(input: {username: $u, password: "member-password", role: MEMBER}) { id } }', { u: name });
  }
  const alice = await server.login('alice', 'member-password');
  const bob = await server.login('bob', 'member-password');
  await server.gql(alice, 'mutation { registerDevice(input: {externalId: "alice-sensor", name: "Alice sensor"}) { id } }');
  await server.gql(bob, 'mutation { registerDevice(input: {externalId: "bob-sensor", name: "Bob sensor"}) { id } }');
  const context = await chromium.newContext();
  const page = await watchedPage(context, server);
  await signIn(page, server, 'alice', 'member-password');
  const table = page.getByRole('table', { name: 'Devices' });
  await table.getByText('Alice sensor').waitFor();
  // Registered after the page is open: still not shown to alice.
  await server.gql(bob, 'mutation { registerDevice(input: {externalId: "bob-late", name: "Bob late"}) { id } }');
  await server.gql(alice, 'mutation { registerDevice(input: {externalId: "alice-late", name: "Alice late"}) { id } }');
  await table.getByText('Alice late').waitFor();
  assert.equal(await table.getByText(/Bob/).count(), 0);
  assert.equal(await page.getByRole('link', { name: 'Users' }).count(), 0, 'members have no Users page');
  assert.deepEqual(page.problems, []);
  await context.close();
});

// The TypeScript example (graphql-ws + fetch) against the real server: it
// signs in, follows `events(after:)` from an id, and prints every later
// event exactly once, in order, across a server restart — including the
// events published while it was reconnecting.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Server, eventually } from '../../../web/e2e/harness.mjs';
import { publish, registerDevice, Lines } from './support.mjs';

const example = join(dirname(fileURLToPath(import.meta.url)), '../dist/follow-events.js');
let server;
let follower;

before(async () => {
  // Access tokens of 8 s: the server closes the follower's socket (4403)
  // when its token runs out, and the follower must come back with a
  // refreshed one (session.ts / Session.access_token).
  server = await Server.start({ FERRITE_ACCESS_TOKEN_TTL_SECONDS: '8' });
});

after(async () => {
  follower?.kill('SIGKILL');
  await server?.cleanup();
});

test('follows events from an id, across token expiry and a restart, without loss or repeat', async () => {
  const admin = await server.login('admin', ADMIN_PASSWORD);
  const device = await registerDevice(server, admin, 'ts-follower-device');
  const before = await publish(server, admin, device, 3);

  follower = spawn(process.execPath, [example, before[0]], {
    env: { ...process.env, FERRITE_URL: server.origin, FERRITE_USERNAME: 'admin', FERRITE_PASSWORD: ADMIN_PASSWORD },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = new Lines(follower);
  // The two stored after `before[0]` are replayed first.
  await eventually('the replay', 15_000, () => lines.events().length >= 2);

  const live = await publish(server, admin, device, 3);
  await eventually('the live events', 15_000, () => lines.events().length >= 5);

  // Past the first access token's expiry: the socket was closed with 4403
  // and reopened with a refreshed token.
  await new Promise((resolve) => setTimeout(resolve, 9_000));
  const fresh = await server.login('admin', ADMIN_PASSWORD);
  const afterExpiry = await publish(server, fresh, device, 2);
  await eventually('the events after the token expired', 20_000, () => lines.events().length >= 7);

  await server.restart();
  // Published at once, while the example is still reconnecting.
  const token = await server.login('admin', ADMIN_PASSWORD);
  const missed = await publish(server, token, device, 4);
  const later = [];
  await eventually('the missed events', 30_000, async () => {
    if (lines.events().length >= 11 && later.length === 0) later.push(...(await publish(server, token, device, 2)));
    return lines.events().length >= 13;
  });

  const expected = [...before.slice(1), ...live, ...afterExpiry, ...missed, ...later];
  // Give a duplicate the chance to show up before comparing.
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(lines.events().map((event) => event.id), expected, lines.stderr());
  // The token was refreshed, not replaced by signing in again.
  assert.doesNotMatch(lines.stderr(), /refresh refused/);
});

// The TypeScript example (graphql-ws + fetch) against the real server: it
// signs in, follows `events(after:)` from an id, and prints every later
// event exactly once, in order, across its token's expiry and a server
// restart (the scenario is `followThroughExpiryAndRestart` in support.mjs).

import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Server } from '../../../web/e2e/harness.mjs';
import { followThroughExpiryAndRestart } from './support.mjs';

const example = join(dirname(fileURLToPath(import.meta.url)), '../dist/follow-events.js');
let server;

before(async () => {
  // Access tokens of 8 s: the server closes the follower's socket (4403)
  // when its token runs out, and the follower must come back with a
  // refreshed one (session.ts / Session.access_token).
  server = await Server.start({ FERRITE_ACCESS_TOKEN_TTL_SECONDS: '8' });
});

after(async () => {
  await server?.cleanup();
});

test('follows events from an id, across token expiry and a restart, without loss or repeat', async () => {
  await followThroughExpiryAndRestart(server, ADMIN_PASSWORD, (after) =>
    spawn(process.execPath, [example, after], {
      env: { ...process.env, FERRITE_URL: server.origin, FERRITE_USERNAME: 'admin', FERRITE_PASSWORD: ADMIN_PASSWORD },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
});

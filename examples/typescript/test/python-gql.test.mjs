// The Python example (examples/python/follow_events.py, on gql) against the
// real server, driven from here so it shares the harness: it signs in,
// follows `events(after:)` from an id, and prints every later event exactly
// once, in order, across its token's expiry and a server restart. Its packages come from
// examples/python/requirements.txt (hashes) in target/python, which
// scripts/test.sh creates; FERRITE_PYTHON names another interpreter.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { ADMIN_PASSWORD, Server, eventually } from '../../../web/e2e/harness.mjs';
import { Lines, followThroughExpiryAndRestart, publish, registerDevice } from './support.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const example = join(root, 'examples/python/follow_events.py');
const python = process.env.FERRITE_PYTHON ?? join(root, 'target/python/bin/python');
let server;

before(async () => {
  assert.ok(existsSync(python), `${python} is missing: run scripts/test.sh, which installs examples/python/requirements.txt there`);
  // Access tokens of 8 s: the server closes the follower's socket (4403)
  // when its token runs out, and the follower must come back with a
  // refreshed one (session.ts / Session.access_token).
  server = await Server.start({ FERRITE_ACCESS_TOKEN_TTL_SECONDS: '8' });
});

after(async () => {
  await server?.cleanup();
});

test('gql follows events from an id, across token expiry and a restart, without loss or repeat', async () => {
  await followThroughExpiryAndRestart(server, ADMIN_PASSWORD, (after) =>
    spawn(python, [example, after], {
      env: { ...process.env, FERRITE_URL: server.origin, FERRITE_USERNAME: 'admin', FERRITE_PASSWORD: ADMIN_PASSWORD },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
});

test("gql's documented WebsocketsTransport works unconfigured: a query and a subscription", async () => {
  const admin = await server.login('admin', ADMIN_PASSWORD);
  const device = await registerDevice(server, admin, 'py-default-transport');
  // gql as its documentation shows it, no `subprotocols`: it offers the
  // legacy protocol first, and the server honours that preference.
  const script = `
import asyncio, json, sys
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

async def main():
    transport = WebsocketsTransport(
        url=sys.argv[1], init_payload={"Authorization": "Bearer " + sys.argv[2]}
    )
    async with Client(transport=transport) as session:
        me = await session.execute(gql("{ me { permission } }"))
        print(json.dumps(me), flush=True)
        async for result in session.subscribe(gql("subscription { events { id service } }")):
            print(json.dumps(result), flush=True)
            return

asyncio.run(main())
`;
  const child = spawn(python, ['-c', script, `${server.origin.replace('http', 'ws')}/graphql`, admin], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = new Lines(child);
  try {
    await eventually('the query', 20_000, () => lines.events().length >= 1);
    assert.deepEqual(lines.events()[0], { me: { permission: 'ADMIN' } });
    await eventually('a live event', 20_000, async () => {
      await publish(server, admin, device, 1);
      return lines.events().length >= 2;
    });
    assert.equal(lines.events()[1].events.service, 'temperature', lines.stderr());
  } finally {
    child.kill('SIGKILL');
  }
});

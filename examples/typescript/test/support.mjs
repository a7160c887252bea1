// What the client-example tests share: publishing over HTTP, reading a
// child process's JSON lines, and the event followers' scenario.

import assert from 'node:assert/strict';
import { eventually } from '../../../web/e2e/harness.mjs';

/** Registers a device for `token`'s user; its id. */
export async function registerDevice(server, token, externalId) {
  const data = await server.gql(token, 'mutation($x: String!) { registerDevice(input: {externalId: $x}) { id } }', { x: externalId });
  return data.registerDevice.id;
}

/** Publishes `count` events one by one; their ids, in order. */
export async function publish(server, token, deviceId, count) {
  const ids = [];
  for (let i = 0; i < count; i++) {
    const data = await server.gql(
      token,
      'mutation($d: ID!, $v: Float!) { publishEvent(input: {deviceId: $d, service: "temperature", payload: $v}) { id } }',
      { d: deviceId, v: 20 + i / 10 },
    );
    ids.push(data.publishEvent.id);
  }
  return ids;
}

/** A child's stdout as JSON lines (events), and its stderr kept for failures. */
export class Lines {
  constructor(child) {
    this.parsed = [];
    this.errors = '';
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      pending += chunk;
      const complete = pending.split('\n');
      pending = complete.pop();
      for (const line of complete) if (line.trim()) this.parsed.push(JSON.parse(line));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      this.errors = (this.errors + chunk).slice(-20_000);
    });
  }

  events() {
    return this.parsed;
  }

  stderr() {
    return this.errors;
  }
}

/**
 * What both event followers (TypeScript and Python) must survive, in one
 * scenario against `server` (started with 8 s access tokens): `start(after)`
 * spawns the follower printing events as JSON lines from the id `after`.
 * It must replay what was stored after `after`, go live, live through its
 * token's expiry (the socket closed with 4403, reopened with a refreshed
 * token), then a server restart with events published while it reconnects,
 * and print every event exactly once, in order, having refreshed its token
 * rather than signed in again.
 */
export async function followThroughExpiryAndRestart(server, password, start) {
  const admin = await server.login('admin', password);
  const device = await registerDevice(server, admin, `follower-${Date.now()}`);
  const before = await publish(server, admin, device, 3);
  const follower = start(before[0]);
  try {
    const lines = new Lines(follower);
    const seen = (count) => () => lines.events().length >= count;
    // The two stored after `before[0]` are replayed first.
    await eventually('the replay', 20_000, seen(2));
    const live = await publish(server, admin, device, 3);
    await eventually('the live events', 15_000, seen(5));

    // Past the first access token's expiry.
    await new Promise((resolve) => setTimeout(resolve, 9_000));
    const afterExpiry = await publish(server, await server.login('admin', password), device, 2);
    await eventually('the events after the token expired', 20_000, seen(7));

    await server.restart();
    // Published at once, while the follower is still reconnecting.
    const token = await server.login('admin', password);
    const missed = await publish(server, token, device, 4);
    await eventually('the missed events', 30_000, seen(11));
    const later = await publish(server, token, device, 2);
    await eventually('the later events', 15_000, seen(13));

    // Give a duplicate the chance to show up before comparing.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const expected = [...before.slice(1), ...live, ...afterExpiry, ...missed, ...later];
    assert.deepEqual(lines.events().map((event) => event.id), expected, lines.stderr());
    assert.doesNotMatch(lines.stderr(), /refresh refused/, 'the token was refreshed, not replaced by signing in again');
  } finally {
    follower.kill('SIGKILL');
  }
}

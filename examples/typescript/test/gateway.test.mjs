// The gateway example (graphql-ws, `lazy: false`, `connectorId`) against the
// real server: its device is ONLINE and stays so, its commands are
// answered, its readings stored; after a server restart it is back ONLINE
// by itself; a revoked key takes it OFFLINE for good. And what the README
// warns about: with graphql-ws's default `lazy: true` the device drops
// OFFLINE as soon as no operation runs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ADMIN_PASSWORD, Server, eventually } from '../../../web/e2e/harness.mjs';
import { Lines } from './support.mjs';

const example = join(dirname(fileURLToPath(import.meta.url)), '../dist/gateway.js');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let server;
let gateway;

before(async () => {
  server = await Server.start();
});

after(async () => {
  gateway?.kill('SIGKILL');
  await server?.cleanup();
});

async function deviceStatus(token, externalId) {
  const data = await server.gql(token, 'query($x: [String!]) { devices(filter: {externalIds: $x}) { nodes { id status } } }', { x: [externalId] });
  return data.devices.nodes[0];
}

test('a gateway on graphql-ws stays ONLINE, answers commands, comes back after a restart', async () => {
  let admin = await server.login('admin', ADMIN_PASSWORD);
  const keyData = await server.gql(admin, 'mutation { createApiKey(name: "ts-gateway", permission: WRITE) { secret apiKey { id } } }');
  const { secret, apiKey } = keyData.createApiKey;
  gateway = spawn(process.execPath, [example, 'ts-gw'], {
    env: { ...process.env, FERRITE_URL: server.origin, FERRITE_API_KEY: secret },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = new Lines(gateway);
  await eventually('the device to register', 15_000, () => lines.events().some((line) => line.registered));
  const device = await deviceStatus(admin, 'ts-gw-thermometer');
  assert.equal(device.status, 'ONLINE');
  await sleep(2_000);
  assert.equal((await deviceStatus(admin, 'ts-gw-thermometer')).status, 'ONLINE', 'still ONLINE with nothing running');

  const sent = await server.gql(admin, 'mutation($d: ID!) { sendCommand(input: {deviceId: $d, service: "ping", payload: 7}) { id } }', { d: device.id });
  const commandId = sent.sendCommand.id;
  const answered = await eventually('the answer', 15_000, async () => {
    const data = await server.gql(admin, 'query($id: ID!) { command(id: $id) { status result } }', { id: commandId });
    return data.command.status === 'SUCCEEDED' && data.command;
  });
  assert.deepEqual(answered.result, { pong: 7 });
  await eventually('a reading', 15_000, async () => {
    const data = await server.gql(admin, 'query($d: ID!) { events(filter: {deviceIds: [$d]}) { totalCount } }', { d: device.id });
    return data.events.totalCount > 0;
  });

  await server.restart();
  admin = await server.login('admin', ADMIN_PASSWORD);
  await eventually('the device back ONLINE after the restart', 30_000, async () => (await deviceStatus(admin, 'ts-gw-thermometer')).status === 'ONLINE');

  await server.gql(admin, 'mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: apiKey.id });
  await eventually('the device OFFLINE once its key is revoked', 15_000, async () => (await deviceStatus(admin, 'ts-gw-thermometer')).status === 'OFFLINE');
  await sleep(2_000);
  assert.equal((await deviceStatus(admin, 'ts-gw-thermometer')).status, 'OFFLINE', 'the gateway does not come back with a revoked key');
  assert.equal(gateway.exitCode, null, 'the example keeps running (and logs why it is offline)');
});

test("with graphql-ws's default lazy: true, a gateway's device goes OFFLINE once nothing runs", async () => {
  const admin = await server.login('admin', ADMIN_PASSWORD);
  const key = await server.apiKey(admin, 'WRITE');
  const client = createClient({
    url: `${server.origin.replace('http', 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}`, connectorId: 'lazy-gw' },
  });
  try {
    await new Promise((resolve, reject) => {
      client.subscribe(
        { query: 'mutation { registerDevice(input: {externalId: "lazy-device"}) { status } }' },
        { next: () => {}, error: reject, complete: resolve },
      );
    });
    await eventually('the lazy client to drop its device', 15_000, async () => (await deviceStatus(admin, 'lazy-device')).status === 'OFFLINE');
  } finally {
    await client.dispose();
  }
});

// urql, set up as the README's Clients section shows, against the real
// server: @urql/exchange-persisted (hashes over GET) and subscriptions over
// graphql-ws with a Hasura-style `connectionParams: { headers }`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, fetchExchange, gql, subscriptionExchange } from '@urql/core';
import { persistedExchange } from '@urql/exchange-persisted';
import { createClient } from 'graphql-ws';
import { pipe, subscribe } from 'wonka';
import WebSocket from 'ws';
import { ADMIN_PASSWORD, Server, eventually } from '../../../web/e2e/harness.mjs';
import { publish, registerDevice } from './support.mjs';

let server;
let token;
let socket;

before(async () => {
  server = await Server.start();
  token = await server.login('admin', ADMIN_PASSWORD);
});

after(async () => {
  await socket?.dispose();
  await server?.cleanup();
});

test('persisted queries and a subscription through urql', async () => {
  const device = await registerDevice(server, token, 'urql-device');
  const requests = [];
  socket = createClient({
    url: `${server.origin.replace('http', 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({
    url: `${server.origin}/graphql`,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
    fetch: async (url, init = {}) => {
      requests.push({ method: init.method ?? 'GET', hasQuery: /[?&]query=/.test(String(url)) || String(init.body ?? '').includes('"query"') });
      return fetch(url, init);
    },
    exchanges: [
      persistedExchange({ preferGetForPersistedQueries: true }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: socket.subscribe(input, sink) }) };
        },
      }),
    ],
  });

  const DEVICE = gql`query Device($id: ID!) { device(id: $id) { id name } }`;
  const first = await client.query(DEVICE, { id: device }, { requestPolicy: 'network-only' }).toPromise();
  assert.equal(first.error, undefined);
  assert.equal(first.data.device.name, 'urql-device');
  const again = await client.query(DEVICE, { id: device }, { requestPolicy: 'network-only' }).toPromise();
  assert.equal(again.data.device.name, 'urql-device');
  // A miss (hash only), the query once, then the hash only.
  assert.deepEqual(requests.map((r) => r.hasQuery), [false, true, false]);
  assert.equal(requests[2].method, 'GET');

  const received = [];
  const { unsubscribe } = pipe(
    client.subscription(gql`subscription { events { id service } }`, {}),
    subscribe((result) => {
      if (result.data) received.push(result.data.events);
    }),
  );
  await eventually('a live event', 15_000, async () => {
    await publish(server, token, device, 1);
    return received.length > 0;
  });
  unsubscribe();
  assert.equal(received[0].service, 'temperature');
});

// Apollo Client 4, set up exactly as the README's Clients section shows
// (only Node's `ws` and a recording `fetch` added), against the real
// server: automatic persisted queries (the hash over GET once the server
// knows the query), the token from session.ts on every request, and
// subscriptions through graphql-ws with Apollo's documented
// `connectionParams: { authToken }`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { SetContextLink } from '@apollo/client/link/context';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { OperationTypeNode } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { Session } from '../dist/session.js';
import { ADMIN_PASSWORD, Server, eventually } from '../../../web/e2e/harness.mjs';
import { publish, registerDevice } from './support.mjs';

let server;
let socket;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await socket?.dispose();
  await server?.cleanup();
});

test('Apollo Client: persisted queries over GET, the session token, subscriptions with authToken', async () => {
  const session = new Session(server.origin, 'admin', ADMIN_PASSWORD);
  const device = await registerDevice(server, await session.accessToken(), 'apollo-device');
  const requests = [];
  const recordingFetch = async (url, init = {}) => {
    const parsed = new URL(String(url));
    requests.push({
      method: init.method ?? 'GET',
      hasQuery: init.body ? 'query' in JSON.parse(init.body) : parsed.searchParams.has('query'),
      hasHash: String(init.body ?? parsed.search).includes('sha256Hash'),
    });
    return fetch(url, init);
  };

  // --- as in the README ---
  const sha256 = async (text) =>
    [...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))]
      .map((byte) => byte.toString(16).padStart(2, '0'))
      .join('');
  const http = ApolloLink.from([
    new SetContextLink(async () => ({ headers: { authorization: `Bearer ${await session.accessToken()}` } })),
    new PersistedQueryLink({ sha256, useGETForHashedQueries: true }),
    new HttpLink({ uri: `${server.origin}/graphql`, fetch: recordingFetch }),
  ]);
  socket = createClient({
    url: `${server.origin.replace('http', 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: async () => ({ authToken: await session.accessToken() }),
    retryAttempts: Infinity,
    shouldRetry: () => true,
  });
  const ws = new GraphQLWsLink(socket);
  const client = new ApolloClient({
    link: ApolloLink.split(({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION, ws, http),
    cache: new InMemoryCache(),
  });
  // --- end ---

  const DEVICES = gql`
    query Devices {
      devices(first: 10) {
        totalCount
        nodes { id name status }
      }
    }
  `;
  const first = await client.query({ query: DEVICES, fetchPolicy: 'network-only' });
  assert.equal(first.data.devices.totalCount, 1);
  assert.equal(first.data.devices.nodes[0].name, 'apollo-device');
  // Normalised by __typename and id, with no cache configuration.
  assert.equal(client.cache.extract()[`Device:${device}`]?.name, 'apollo-device');
  // The hash alone (GET), PersistedQueryNotFound, then the query with it
  // (POST), which registers it…
  assert.deepEqual(
    requests.map(({ method, hasQuery, hasHash }) => [method, hasQuery, hasHash]),
    [
      ['GET', false, true],
      ['POST', true, true],
    ],
  );
  // …so from now on the hash over GET is all Apollo sends.
  const again = await client.query({ query: DEVICES, fetchPolicy: 'network-only' });
  assert.equal(again.data.devices.totalCount, 1);
  assert.deepEqual(requests.slice(2).map(({ method, hasQuery, hasHash }) => [method, hasQuery, hasHash]), [['GET', false, true]]);

  const received = [];
  const subscription = client
    .subscribe({ query: gql`subscription { events { id service payload } }` })
    .subscribe({ next: ({ data }) => received.push(data.events) });
  await eventually('a live event', 15_000, async () => {
    await publish(server, await session.accessToken(), device, 1);
    return received.length > 0;
  });
  subscription.unsubscribe();
  assert.equal(received[0].service, 'temperature');
});

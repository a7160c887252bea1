// GraphiQL, served by `ferrite serve` to a browser's GET /graphql and built
// into the binary with the dashboard, so it works with no network beyond
// this server (async-graphql's page loads React and GraphiQL from a CDN).
//
// Authentication: an `Authorization` header in GraphiQL's Headers editor is
// sent as it is (over WebSocket as the `connection_init` payload, which the
// server reads the same way). Without one, and when this browser is signed
// in to the dashboard, GraphiQL borrows the dashboard's session: the same
// access token, refreshed with the other tabs under the same lock.
//
// React, not Preact: GraphiQL is a React component. This is a separate
// bundle; the dashboard never loads it.

import { createGraphiQLFetcher, type Fetcher, type FetcherParams } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import type { ExecutionResult } from 'graphql';
import { createClient } from 'graphql-ws';
import 'graphiql/style.css';
import { createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { Session, httpTransport, webLock } from '../lib/session';
import { isSubscription, withToken } from './fetcher';
import './graphiql.css';

const session = new Session(httpTransport, webLock, new BroadcastChannel('ferrite-session'));
const signedIn = session.restore().catch(() => false);

const websocket = new URL('/graphql', location.href);
websocket.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
const http = createGraphiQLFetcher({ url: '/graphql' });

/**
 * A subscription on a socket of its own, with the headers as the
 * `connection_init` payload; the socket closes when GraphiQL stops it.
 */
async function* subscribe(params: FetcherParams, headers: Record<string, unknown>) {
  const client = createClient({ url: websocket.href, connectionParams: headers, retryAttempts: 0 });
  try {
    yield* client.iterate({ query: params.query, variables: params.variables, operationName: params.operationName ?? undefined });
  } finally {
    await client.dispose();
  }
}

const fetcher: Fetcher = async (params, options) => {
  await signedIn;
  const headers = await withToken(options?.headers, () => session.token());
  // What arrives is JSON (errors formatted, not GraphQLError objects),
  // which is all GraphiQL shows.
  if (isSubscription(params)) return subscribe(params, headers) as AsyncIterable<unknown> as AsyncIterable<ExecutionResult>;
  return http(params, { ...options, headers });
};

function Banner() {
  const user = session.tokens.value?.user;
  return createElement(
    'p',
    { className: 'ferrite-banner', role: 'status' },
    user
      ? `Signed in to the dashboard as ${user.username}: requests without an Authorization header use that session.`
      : 'Not signed in: add {"Authorization": "Bearer <token or API key>"} under Headers, or sign in at ',
    user ? null : createElement('a', { href: '/' }, 'the dashboard'),
    user ? null : '.',
  );
}

const root = createRoot(document.getElementById('graphiql')!);
function render(): void {
  root.render(
    createElement(
      'div',
      { className: 'ferrite-graphiql' },
      createElement(Banner),
      createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true }),
    ),
  );
}
session.status.subscribe(render);

// Follows Ferrite's event stream and prints every event once, in order, as
// one JSON line: across dropped connections and server restarts, with no
// gap and no duplicate.
//
//   FERRITE_URL=http://127.0.0.1:8080 FERRITE_USERNAME=admin \
//   FERRITE_PASSWORD=… node dist/follow-events.js [AFTER_ID]
//
// How, with graphql-ws:
// - `lazy: false` and endless retries: the socket is opened at once and
//   reopened after every drop (with graphql-ws's default `lazy: true` a
//   client with no running operation closes its socket).
// - `connectionParams` is a function, so every (re)connection presents a
//   fresh access token (see session.ts).
// - The subscription is ended when the socket drops and started again, on
//   the next connection, with `after` = the id of the last event printed:
//   the server replays everything stored since, then goes live. (graphql-ws
//   would otherwise re-send the original subscription, with the original
//   `after`, and replay events already printed.)
// - Ids are checked anyway: an event at or below the last one is skipped.

import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { Session } from './session.js';

const EVENTS = `subscription Follow($after: ID) {
  events(after: $after) { id deviceId service payload receivedAt }
}`;

interface Event {
  id: string;
  deviceId: string;
  service: string;
  payload: unknown;
  receivedAt: string;
}

export function followEvents(session: Session, after: string | null, onEvent: (event: Event) => void): Client {
  let lastId = after;
  let stop: (() => void) | null = null;

  const follow = () => {
    stop?.();
    stop = client.subscribe<{ events: Event }>(
      { query: EVENTS, variables: { after: lastId } },
      {
        next: ({ data, errors }) => {
          if (errors) console.error('ferrite:', JSON.stringify(errors));
          const event = data?.events;
          if (!event || (lastId !== null && BigInt(event.id) <= BigInt(lastId))) return;
          lastId = event.id;
          onEvent(event);
        },
        error: (error) => console.error('ferrite: subscription ended:', error),
        complete: () => {},
      },
    );
  };

  const client = createClient({
    url: session.socketUrl,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: Infinity,
    // Retry whatever closed the socket: a restart (1001), a network drop, an
    // expired token (4403: the next attempt asks `accessToken()` again).
    shouldRetry: () => true,
    retryWait: async (retries) => {
      const ms = Math.min(10_000, 250 * 2 ** retries) * (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
    connectionParams: async () => ({ Authorization: `Bearer ${await session.accessToken()}` }),
    on: {
      connected: () => follow(),
      closed: () => {
        stop?.();
        stop = null;
      },
    },
  });
  return client;
}

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const session = new Session(
    process.env.FERRITE_URL ?? 'http://127.0.0.1:8080',
    process.env.FERRITE_USERNAME ?? 'admin',
    process.env.FERRITE_PASSWORD ?? '',
  );
  const client = followEvents(session, process.argv[2] ?? null, (event) => {
    process.stdout.write(`${JSON.stringify(event)}\n`);
  });
  const quit = () => void Promise.resolve(client.dispose()).finally(() => process.exit(0));
  process.on('SIGTERM', quit);
  process.on('SIGINT', quit);
}

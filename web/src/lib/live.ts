// The one WebSocket of the dashboard (graphql-transport-ws, through the
// graphql-ws client): every subscription of every page shares it.
//
// - `lazy: false` and unbounded retries: the socket stays open while the
//   page does, and comes back by itself after a server restart or a network
//   outage (graphql-ws gives up after 5 retries by default, and retries
//   after 4403 too, so `connectionParams` fetches a fresh token each time).
// - When the session refreshes its access token, `renewConnection` hands it
//   to the open socket, which would otherwise be closed when the token it
//   was opened with expires.
// - `status` is what the connection indicator shows.

import { signal } from '@preact/signals';
import { type Client, createClient } from 'graphql-ws';
import { ApiError, errorOf } from './graphql';
import type { Session } from './session';

export type LinkStatus = 'connecting' | 'live' | 'reconnecting';

export const linkStatus = signal<LinkStatus>('connecting');
/** Bumped on every reconnect after the first connect. */
export const reconnects = signal(0);

let client: Client | null = null;

export function connect(session: Session): Client {
  if (client) return client;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  let renewedWith: string | null = null;
  const ws = createClient({
    url,
    lazy: false,
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => true,
    retryWait: (retries) => waitToRetry(retries, window, document),
    keepAlive: 20_000,
    connectionParams: async () => {
      const token = await session.token();
      renewedWith = token;
      return token ? { Authorization: `Bearer ${token}` } : {};
    },
    on: {
      connecting: () => {
        linkStatus.value = linkStatus.value === 'live' ? 'reconnecting' : linkStatus.value;
      },
      connected: (_socket, _payload, wasRetry) => {
        linkStatus.value = 'live';
        if (wasRetry) reconnects.value += 1;
      },
      closed: () => {
        if (linkStatus.value === 'live') linkStatus.value = 'reconnecting';
      },
    },
  });
  session.tokens.subscribe((tokens) => {
    if (!tokens || tokens.accessToken === renewedWith || linkStatus.value !== 'live') return;
    renewedWith = tokens.accessToken;
    const dispose = ws.subscribe(
      { query: 'mutation($t: String!) { renewConnection(token: $t) }', variables: { t: tokens.accessToken } },
      { next: () => dispose(), error: () => undefined, complete: () => undefined },
    );
  });
  client = ws;
  return ws;
}

/** 0.5 s, 1 s, 2 s … up to 10 s, each with jitter (half to all of it). */
export function retryDelay(retries: number, random = Math.random): number {
  const base = Math.min(10_000, 500 * 2 ** retries);
  return base / 2 + random() * (base / 2);
}

/**
 * Waits before the next reconnect attempt, but no longer once the browser
 * says the network is back (`online`) or the tab is looked at again
 * (`visibilitychange`): a page coming back from an outage catches up at
 * once instead of sleeping out its backoff.
 */
export function waitToRetry(retries: number, win: EventTarget, doc: EventTarget & { visibilityState: string }): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      win.removeEventListener('online', done);
      doc.removeEventListener('visibilitychange', visible);
      resolve();
    };
    const visible = () => {
      if (doc.visibilityState === 'visible') done();
    };
    const timer = setTimeout(done, retryDelay(retries));
    win.addEventListener('online', done);
    doc.addEventListener('visibilitychange', visible);
  });
}

export function disconnect(): void {
  void client?.dispose();
  client = null;
  linkStatus.value = 'connecting';
}

export interface Live<T> {
  /** Each result's `data`. */
  next(data: T): void;
  /** An error the server sent inside the stream (e.g. EVENTS_PRUNED). */
  streamError?(error: ApiError): void;
  /** The subscription ended with an error. */
  error?(error: ApiError): void;
}

/**
 * A subscription whose variables are read again before every (re)send:
 * graphql-ws re-sends the payload object it was given after a reconnect,
 * so `variables()` is written into it when the socket reconnects, and a
 * subscription resumes from where the page is, not from where it began.
 */
export function subscribe<T>(query: string, variables: () => Record<string, unknown>, sink: Live<T>): () => void {
  if (!client) throw new Error('connect() first');
  const payload = { query, variables: variables() };
  const stopRefreshing = reconnects.subscribe(() => {
    payload.variables = variables();
  });
  const dispose = client.subscribe<T>(payload, {
    next: (result) => {
      if (result.errors?.length) sink.streamError?.(errorOf(result as never, 'subscription error'));
      if (result.data) sink.next(result.data);
    },
    error: (error) => {
      const reason =
        Array.isArray(error) ? errorOf({ errors: error }, 'subscription failed') :
        error instanceof ApiError ? error :
        new ApiError('the subscription failed', 'NETWORK');
      sink.error?.(reason);
    },
    complete: () => undefined,
  });
  return () => {
    stopRefreshing();
    dispose();
  };
}

// Signing in and staying signed in.
//
// The access token lives in this module's memory only. The refresh token is
// an HttpOnly cookie on /auth that page script never sees (see the server's
// http/session.rs). A refresh token works once and a replay revokes the
// whole session, so all tabs of the dashboard refresh as one:
//
// - every refresh runs under one Web Lock, and inside it a tab first looks
//   whether another tab's fresh tokens (shared over a BroadcastChannel)
//   already made it unnecessary;
// - a tab that opens asks the others for their tokens before it spends the
//   cookie;
// - the tab that refreshes shares the result, and every tab re-arms its
//   timer from the shared expiry, so one refresh serves them all.

import { signal } from '@preact/signals';
import { ApiError, errorOf } from './graphql';

export type Role = 'ADMIN' | 'MEMBER';
export interface User {
  id: string;
  username: string;
  role: Role;
}
export interface Tokens {
  accessToken: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  user: User;
}

/** The /auth endpoints (or a fake of them in tests). */
export interface Transport {
  login(username: string, password: string): Promise<Tokens>;
  refresh(): Promise<Tokens>;
  logout(): Promise<void>;
}

/** Runs `task` while holding the lock `name`, across every tab. */
export type Lock = <T>(name: string, task: () => Promise<T>) => Promise<T>;

export interface Channel {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}

type Message =
  | { type: 'tokens'; tokens: Tokens }
  | { type: 'signed-out' }
  | { type: 'hello' };

/** Refresh this long before expiry (at most a quarter of the lifetime). */
const MARGIN_MS = 60_000;
/** How long the refreshing tab keeps the lock after sharing its tokens. */
const SHARE_WAIT_MS = 50;
/** How long an opening tab waits for another tab's tokens. */
const HELLO_WAIT_MS = 150;

/** When to refresh a token expiring at `expiresAt`, from `now`. */
export function refreshDelay(expiresAt: number, now: number): number {
  const left = expiresAt - now;
  return Math.max(1_000, left - Math.min(MARGIN_MS, left / 4));
}

/** Whether a token expiring at `expiresAt` is good for a while yet. */
export function fresh(tokens: Tokens | null, now: number): tokens is Tokens {
  return tokens !== null && refreshDelay(tokens.expiresAt, now) > 1_000;
}

export type Status = 'unknown' | 'signed-in' | 'signed-out';

export class Session {
  readonly tokens = signal<Tokens | null>(null);
  readonly status = signal<Status>('unknown');
  private timer: ReturnType<typeof setTimeout> | undefined;
  private waiting: ((tokens: Tokens) => void) | null = null;
  private refreshing: Promise<Tokens | null> | null = null;
  private readonly transport: Transport;
  private readonly lock: Lock;
  private readonly channel: Channel;
  private readonly now: () => number;

  constructor(transport: Transport, lock: Lock, channel: Channel, now: () => number = Date.now) {
    this.transport = transport;
    this.lock = lock;
    this.channel = channel;
    this.now = now;
    this.channel.onmessage = (event) => this.receive(event.data as Message);
  }

  /** On page load: tokens from another tab, else from the cookie. */
  async restore(): Promise<boolean> {
    const shared = await new Promise<Tokens | null>((resolve) => {
      const timeout = setTimeout(() => {
        this.waiting = null;
        resolve(null);
      }, HELLO_WAIT_MS);
      this.waiting = (tokens) => {
        clearTimeout(timeout);
        this.waiting = null;
        resolve(tokens);
      };
      this.channel.postMessage({ type: 'hello' } satisfies Message);
    });
    if (shared) {
      this.adopt(shared);
      return true;
    }
    return (await this.refresh(false)) !== null;
  }

  async signIn(username: string, password: string): Promise<void> {
    const tokens = await this.transport.login(username, password);
    this.adopt(tokens);
    this.share({ type: 'tokens', tokens });
  }

  async signOut(): Promise<void> {
    try {
      await this.lock('ferrite-refresh', () => this.transport.logout());
    } finally {
      this.forget();
      this.share({ type: 'signed-out' });
    }
  }

  /** A valid access token, refreshing first if it is about to expire. */
  async token(): Promise<string | null> {
    const tokens = this.tokens.value;
    if (tokens && tokens.expiresAt - this.now() > 5_000) return tokens.accessToken;
    if (this.status.value === 'signed-out') return null;
    return (await this.refresh(false))?.accessToken ?? null;
  }

  /** The server refused the token: a fresh one, or null once signed out. */
  async rejected(): Promise<string | null> {
    return (await this.refresh(true))?.accessToken ?? null;
  }

  /**
   * Refreshes under the cross-tab lock, unless (and `force` is false) the
   * tokens became fresh meanwhile, from another tab.
   */
  refresh(force: boolean): Promise<Tokens | null> {
    if (this.refreshing) return this.refreshing;
    const before = this.tokens.value;
    this.refreshing = this.lock('ferrite-refresh', async () => {
      const now = this.tokens.value;
      if (now && now !== before) return now; // another tab refreshed
      if (!force && fresh(now, this.now())) return now;
      try {
        const tokens = await this.transport.refresh();
        this.adopt(tokens);
        this.share({ type: 'tokens', tokens });
        // Held a moment longer so the other tabs hear of the new tokens
        // before one of them takes the lock and would spend the cookie.
        await new Promise((resolve) => setTimeout(resolve, SHARE_WAIT_MS));
        return tokens;
      } catch (error) {
        if (error instanceof ApiError && error.code === 'UNAUTHENTICATED') {
          this.forget();
          return null;
        }
        throw error;
      }
    }).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private adopt(tokens: Tokens): void {
    this.tokens.value = tokens;
    this.status.value = 'signed-in';
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => void this.refresh(false).catch(() => this.retrySoon()),
      refreshDelay(tokens.expiresAt, this.now()),
    );
  }

  /** A refresh failed for a reason other than the session (the network). */
  private retrySoon(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(true).catch(() => this.retrySoon()), 5_000);
  }

  private forget(): void {
    clearTimeout(this.timer);
    this.tokens.value = null;
    this.status.value = 'signed-out';
  }

  private share(message: Message): void {
    this.channel.postMessage(message);
  }

  private receive(message: Message): void {
    switch (message.type) {
      case 'hello':
        if (fresh(this.tokens.value, this.now())) {
          this.share({ type: 'tokens', tokens: this.tokens.value });
        }
        break;
      case 'tokens': {
        const current = this.tokens.value;
        if (this.waiting) this.waiting(message.tokens);
        else if (!current || message.tokens.expiresAt >= current.expiresAt) this.adopt(message.tokens);
        break;
      }
      case 'signed-out':
        this.forget();
        break;
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.channel.close();
  }
}

/** The browser's /auth endpoints. */
export const httpTransport: Transport = {
  login: (username, password) => call('/auth/login', { username, password }),
  refresh: () => call('/auth/refresh', {}),
  logout: async () => {
    await call('/auth/logout', {}).catch(() => undefined);
  },
};

async function call<T extends object>(path: string, body: object): Promise<T & Tokens> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'ferrite-session': '1' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError('the server cannot be reached', 'NETWORK');
  }
  if (response.status === 204) throw new ApiError('not signed in', 'UNAUTHENTICATED');
  const json = await response.json().catch(() => null);
  if (!response.ok) throw errorOf(json, `the server answered ${response.status}`);
  if (json && typeof json.expiresAt === 'string') json.expiresAt = Date.parse(json.expiresAt);
  return json;
}

/** Web Locks where the browser has them (every current one does). */
export const webLock: Lock = (name, task) =>
  navigator.locks ? navigator.locks.request(name, task) : task();

import { afterEach, describe, expect, it } from 'vitest';
import { ApiError } from './graphql';
import { type Lock, Session, type Tokens, type Transport, refreshDelay } from './session';

/** The server's rules: each refresh token works once; a replay ends the session. */
class FakeServer {
  cookie: string | null = null;
  private used = new Set<string>();
  revoked = false;
  refreshes = 0;
  private n = 0;
  constructor(private ttl: number) {}
  private issue(): Tokens {
    this.n += 1;
    this.cookie = `r${this.n}`;
    return { accessToken: `a${this.n}`, expiresAt: Date.now() + this.ttl, user: { id: 'u', username: 'ada', role: 'ADMIN' } };
  }
  transport(): Transport {
    return {
      login: async () => this.issue(),
      refresh: async () => {
        const cookie = this.cookie;
        await new Promise((r) => setTimeout(r, 5));
        if (this.revoked || !cookie) throw new ApiError('no session', 'UNAUTHENTICATED');
        if (this.used.has(cookie)) {
          this.revoked = true;
          throw new ApiError('replayed', 'UNAUTHENTICATED');
        }
        this.used.add(cookie);
        this.refreshes += 1;
        return this.issue();
      },
      logout: async () => {
        this.revoked = true;
      },
    };
  }
}

/** navigator.locks for one "browser" of several tabs. */
function memoryLock(): Lock {
  let tail: Promise<unknown> = Promise.resolve();
  return (_name, task) => {
    const run = tail.then(task, task);
    tail = run.catch(() => undefined);
    return run;
  };
}

const open: Session[] = [];
function tab(server: FakeServer, lock: Lock, name: string): Session {
  const session = new Session(server.transport(), lock, new BroadcastChannel(name));
  open.push(session);
  return session;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

describe('refreshDelay', () => {
  it('refreshes a minute early, or at three quarters of a short lifetime', () => {
    expect(refreshDelay(900_000, 0)).toBe(840_000);
    expect(refreshDelay(40_000, 0)).toBe(30_000);
    expect(refreshDelay(500, 0)).toBe(1_000);
  });
});

describe('Session across tabs', () => {
  it('two tabs asking at once refresh once, and neither replays the token', async () => {
    const server = new FakeServer(600_000);
    const lock = memoryLock();
    const a = tab(server, lock, 'once');
    const b = tab(server, lock, 'once');
    await a.signIn('ada', 'pw');
    await new Promise((r) => setTimeout(r, 20)); // b hears of a's tokens
    await Promise.all([a.rejected(), b.rejected()].map((p) => p.catch(() => null)));
    expect(server.revoked).toBe(false);
    expect(server.refreshes).toBe(1);
    expect(a.tokens.value?.accessToken).toBe(b.tokens.value?.accessToken);
  });

  it('a tab opening beside a signed-in one takes its tokens without spending the cookie', async () => {
    const server = new FakeServer(600_000);
    const lock = memoryLock();
    const a = tab(server, lock, 'hello');
    await a.signIn('ada', 'pw');
    const b = tab(server, lock, 'hello');
    expect(await b.restore()).toBe(true);
    expect(server.refreshes).toBe(0);
    expect(b.tokens.value?.accessToken).toBe(a.tokens.value?.accessToken);
  });

  it('a reload (no other tab) restores the session from the cookie; sign-out ends it everywhere', async () => {
    const server = new FakeServer(600_000);
    const lock = memoryLock();
    const a = tab(server, lock, 'reload');
    await a.signIn('ada', 'pw');
    a.close();
    open.splice(open.indexOf(a), 1);
    const reloaded = tab(server, lock, 'reload');
    const other = tab(server, lock, 'reload');
    expect(await reloaded.restore()).toBe(true);
    expect(server.refreshes).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    await reloaded.signOut();
    await new Promise((r) => setTimeout(r, 20));
    expect(reloaded.status.value).toBe('signed-out');
    expect(other.status.value).toBe('signed-out');
    expect(await reloaded.restore()).toBe(false);
  });

  it('the timer refreshes before expiry, once for all tabs', async () => {
    const server = new FakeServer(1_400); // refresh due after ~1 s
    const lock = memoryLock();
    const a = tab(server, lock, 'timer');
    const b = tab(server, lock, 'timer');
    await a.signIn('ada', 'pw');
    await new Promise((r) => setTimeout(r, 1_300));
    expect(server.refreshes).toBe(1);
    expect(server.revoked).toBe(false);
    expect(b.tokens.value?.accessToken).toBe(a.tokens.value?.accessToken);
  });
});

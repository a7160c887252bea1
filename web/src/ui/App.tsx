// The shell: sign-in gate, navigation, connection indicator, theme, and
// the page for the current route.

import { signal } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import { useTokens } from '../lib/graphql';
import { connect, disconnect, linkStatus } from '../lib/live';
import { route } from '../lib/router';
import { Session, httpTransport, webLock } from '../lib/session';
import { Account } from './Account';
import { Commands } from './Commands';
import { DevicePage } from './DevicePage';
import { Devices } from './Devices';
import { Events } from './Events';
import { Keys } from './Keys';
import { Login } from './Login';
import { Users } from './Users';

export const session = new Session(httpTransport, webLock, new BroadcastChannel('ferrite-session'));
useTokens({ token: () => session.token(), rejected: () => session.rejected() });
void session.restore().catch(() => {
  session.status.value = 'signed-out';
});

type Theme = 'system' | 'light' | 'dark';
const theme = signal<Theme>((localStorage.getItem('ferrite-theme') as Theme | null) ?? 'system');
function applyTheme(value: Theme): void {
  if (value === 'system') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = value;
}
applyTheme(theme.value);

function cycleTheme(): void {
  const next: Theme = theme.value === 'system' ? 'dark' : theme.value === 'dark' ? 'light' : 'system';
  theme.value = next;
  localStorage.setItem('ferrite-theme', next);
  applyTheme(next);
}

function Link({ href, children }: { href: string; children: string }) {
  const path = route.value.pathname;
  const current = path === href || (href !== '/' && path.startsWith(`${href}/`));
  return (
    <a href={href} aria-current={current ? 'page' : undefined}>
      {children}
    </a>
  );
}

function Indicator() {
  const status = linkStatus.value;
  const text = status === 'live' ? 'Live' : status === 'reconnecting' ? 'Reconnecting…' : 'Connecting…';
  return (
    <span class={`link link-${status}`} role="status" aria-live="polite" aria-label={`Connection: ${text}`}>
      {text}
    </span>
  );
}

function Page() {
  const path = route.value.pathname;
  const device = path.match(/^\/devices\/([^/]+)$/);
  if (device) return <DevicePage id={decodeURIComponent(device[1])} />;
  switch (path) {
    case '/':
    case '/devices':
      return <Devices />;
    case '/events':
      return <Events />;
    case '/commands':
      return <Commands />;
    case '/keys':
      return <Keys />;
    case '/users':
      return <Users />;
    case '/account':
      return <Account />;
    default:
      return (
        <main>
          <h1>Not found</h1>
          <p>
            No page at <code>{path}</code>. <a href="/devices">Devices</a>
          </p>
        </main>
      );
  }
}

export function App() {
  const status = session.status.value;
  const tokens = session.tokens.value;
  // Connected during render, not in an effect: the pages' effects run
  // first and subscribe at once.
  if (status === 'signed-in') connect(session);
  useEffect(() => {
    if (status === 'signed-out') disconnect();
  }, [status]);
  if (status === 'unknown') return <p class="loading">Loading…</p>;
  if (status === 'signed-out' || !tokens) return <Login session={session} />;
  const admin = tokens.user.role === 'ADMIN';
  return (
    <>
      <header class="top">
        <a class="brand" href="/devices">Ferrite</a>
        <nav aria-label="Main">
          <Link href="/devices">Devices</Link>
          <Link href="/events">Events</Link>
          <Link href="/commands">Commands</Link>
          <Link href="/keys">API keys</Link>
          {admin && <Link href="/users">Users</Link>}
          <Link href="/account">Account</Link>
        </nav>
        <div class="tools">
          <Indicator />
          <button type="button" onClick={cycleTheme} aria-label={`Theme: ${theme.value} (change)`}>
            {theme.value === 'dark' ? '☾' : theme.value === 'light' ? '☀' : '◐'}
          </button>
          <button type="button" onClick={() => void session.signOut()}>
            Sign out {tokens.user.username}
          </button>
        </div>
      </header>
      <Page />
    </>
  );
}

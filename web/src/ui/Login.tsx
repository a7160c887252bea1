import { useState } from 'preact/hooks';
import { ApiError } from '../lib/graphql';
import type { Session } from '../lib/session';

export function Login({ session }: { session: Session }) {
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  async function submit(event: Event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(null);
    try {
      // The URL is left as it is: after sign-in the deep link's page renders.
      await session.signIn(String(form.get('username')), String(form.get('password')));
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(String(e), 'UNKNOWN'));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">Sign in to Ferrite</h1>
        <label>
          Username
          <input name="username" autocomplete="username" required />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" required />
        </label>
        {error && <ErrorNote error={error} />}
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

/** The server's message with its code. */
export function ErrorNote({ error }: { error: unknown }) {
  const e = error instanceof ApiError ? error : new ApiError(String(error), 'UNKNOWN');
  return (
    <p class="error" role="alert">
      {e.message} <code>{e.code}</code>
    </p>
  );
}

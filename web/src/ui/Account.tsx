// The signed-in user's own account: change password.

import { useState } from 'preact/hooks';
import { gql } from '../lib/graphql';
import { field, onSubmit } from './forms';
import { session } from './App';
import { ErrorNote } from './Login';

export function Account() {
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  const user = session.tokens.value?.user;
  const change = onSubmit(async (fields) => {
    setDone(false);
    const password = field(fields, 'new');
    await gql('mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }', {
      c: field(fields, 'current'),
      n: password,
    });
    // The change ended every session, this one too; this browser signs in
    // again with the new password (its other tabs follow).
    if (user) await session.signIn(user.username, password);
    setDone(true);
  }, setError);
  return (
    <main>
      <h1>Account</h1>
      <p>Signed in as <strong>{user?.username}</strong> ({user?.role}).</p>
      <form onSubmit={change} aria-label="Change password" class="stack">
        <h2>Change password</h2>
        <label>Current password <input name="current" type="password" required autocomplete="current-password" /></label>
        <label>New password <input name="new" type="password" required minLength={8} autocomplete="new-password" /></label>
        <button type="submit">Change password</button>
        {done && <p role="status">Password changed. Your sessions elsewhere were signed out.</p>}
        {error !== null && <ErrorNote error={error} />}
      </form>
    </main>
  );
}

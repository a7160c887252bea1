// Users, for administrators: create, change a role, reset a password,
// disable, enable and delete.

import { useEffect, useState } from 'preact/hooks';
import { when } from '../lib/format';
import { gql } from '../lib/graphql';
import { session } from './App';
import { field, onSubmit } from './forms';
import { ErrorNote } from './Login';

interface User {
  id: string;
  username: string;
  role: string;
  createdAt: string;
  disabledAt: string | null;
}
const ROLES = ['MEMBER', 'ADMIN'];

export function Users() {
  const [users, setUsers] = useState<User[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [resetting, setResetting] = useState<User | null>(null);
  const load = () => gql<{ users: User[] }>('{ users { id username role createdAt disabledAt } }').then((d) => setUsers(d.users), setError);
  useEffect(() => void load(), []);
  const me = session.tokens.value?.user.id;

  const create = onSubmit(async (fields) => {
    const result = await gql<{ createUser: User }>(
      'mutation($i: CreateUserInput!) { createUser(input: $i) { username } }',
      { i: { username: field(fields, 'username'), password: field(fields, 'password'), role: field(fields, 'role') } },
    );
    setDone(`Created ${result.createUser.username}.`);
    void load();
  }, setError);

  async function setRole(user: User, role: string) {
    try {
      await gql('mutation($id: ID!, $r: Role!) { setUserRole(id: $id, role: $r) { id } }', { id: user.id, r: role });
      setDone(`${user.username} is now ${role}.`);
      setError(null);
    } catch (e) {
      setError(e);
    }
    void load();
  }

  /** Runs an administrator's mutation on `user`, then says `what` happened. */
  async function act(user: User, mutation: string, what: string) {
    try {
      await gql(`mutation($id: ID!) { ${mutation}(id: $id) { id } }`, { id: user.id });
      setDone(what);
      setError(null);
    } catch (e) {
      setError(e);
    }
    void load();
  }

  function remove(user: User) {
    const sure = confirm(`Delete ${user.username} for good, with every device, event, command and API key they own? To keep their data, disable them instead.`);
    if (sure) void act(user, 'deleteUser', `Deleted ${user.username} and everything they owned.`);
  }

  const reset = onSubmit(async (fields) => {
    if (!resetting) return;
    await gql('mutation($id: ID!, $p: String!) { setUserPassword(id: $id, newPassword: $p) }', {
      id: resetting.id, p: field(fields, 'password'),
    });
    setDone(`New password set for ${resetting.username}; their sessions were signed out.`);
    setResetting(null);
  }, setError);

  return (
    <main>
      <h1>Users</h1>
      <form class="inline" onSubmit={create} aria-label="Create a user">
        <label>Username <input name="username" required autocomplete="off" /></label>
        <label>Password <input name="password" type="password" required minLength={8} autocomplete="new-password" /></label>
        <label>
          Role
          <select name="role">{ROLES.map((r) => <option key={r} value={r}>{r}</option>)}</select>
        </label>
        <button type="submit">Create user</button>
      </form>
      {done && <p role="status">{done}</p>}
      {error !== null && <ErrorNote error={error} />}
      {resetting && (
        <form class="inline" onSubmit={reset} aria-label={`Reset the password of ${resetting.username}`}>
          <label>
            New password for {resetting.username}
            <input name="password" type="password" required minLength={8} autocomplete="new-password" />
          </label>
          <button type="submit">Set password</button>
          <button type="button" onClick={() => setResetting(null)}>Cancel</button>
        </form>
      )}
      <div class="table-scroll">
      <table aria-label="Users">
        <thead><tr><th scope="col">Username</th><th scope="col">Role</th><th scope="col">Password</th><th scope="col">Access</th><th scope="col">Created</th></tr></thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.id}>
              <td>
                {u.username}{u.id === me && <small> (you)</small>}
                {u.disabledAt && <>{' '}<span class="badge badge-offline">disabled</span></>}
              </td>
              <td>
                <select aria-label={`Role of ${u.username}`} value={u.role}
                  onChange={(e) => void setRole(u, e.currentTarget.value)}>
                  {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
                </select>
              </td>
              <td>
                <button type="button" onClick={() => setResetting(u)} aria-label={`Reset the password of ${u.username}`}>
                  Reset…
                </button>
              </td>
              <td class="actions">
                {u.id !== me && (u.disabledAt
                  ? <button type="button" onClick={() => void act(u, 'enableUser', `${u.username} is enabled again.`)}
                      aria-label={`Enable ${u.username}`}>Enable</button>
                  : <button type="button" onClick={() => void act(u, 'disableUser', `${u.username} is disabled; their sessions and connections were ended.`)}
                      aria-label={`Disable ${u.username}`}>Disable</button>)}
                {u.id !== me && (
                  <button type="button" class="danger" onClick={() => remove(u)} aria-label={`Delete ${u.username}`}>Delete…</button>
                )}
              </td>
              <td>{when(u.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </main>
  );
}

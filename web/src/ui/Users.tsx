// Users, for administrators: list and create.

import { useEffect, useState } from 'preact/hooks';
import { when } from '../lib/format';
import { gql } from '../lib/graphql';
import { ErrorNote } from './Login';

interface User {
  id: string;
  username: string;
  role: string;
  createdAt: string;
}

export function Users() {
  const [users, setUsers] = useState<User[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [made, setMade] = useState<string | null>(null);
  const load = () => gql<{ users: User[] }>('{ users { id username role createdAt } }').then((d) => setUsers(d.users), setError);
  useEffect(() => void load(), []);
  async function create(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    try {
      const result = await gql<{ createUser: User }>(
        'mutation($i: CreateUserInput!) { createUser(input: $i) { username } }',
        { i: { username: String(data.get('username')), password: String(data.get('password')), role: String(data.get('role')) } },
      );
      setMade(result.createUser.username);
      setError(null);
      form.reset();
      void load();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <main>
      <h1>Users</h1>
      <form class="inline" onSubmit={create} aria-label="Create a user">
        <label>Username <input name="username" required autocomplete="off" /></label>
        <label>Password <input name="password" type="password" required minLength={8} autocomplete="new-password" /></label>
        <label>
          Role
          <select name="role">
            <option value="MEMBER">MEMBER</option>
            <option value="ADMIN">ADMIN</option>
          </select>
        </label>
        <button type="submit">Create user</button>
      </form>
      {made && <p role="status">Created {made}.</p>}
      {error !== null && <ErrorNote error={error} />}
      <table aria-label="Users">
        <thead><tr><th scope="col">Username</th><th scope="col">Role</th><th scope="col">Created</th></tr></thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.id}><td>{u.username}</td><td>{u.role}</td><td>{when(u.createdAt)}</td></tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

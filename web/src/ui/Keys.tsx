// API keys: create (the secret is shown once), list, revoke.

import { useEffect, useState } from 'preact/hooks';
import { when } from '../lib/format';
import { gql } from '../lib/graphql';
import { field, onSubmit } from './forms';
import { ErrorNote } from './Login';

interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  permission: string;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}
const KEY_FIELDS = 'id name prefix permission createdAt lastUsedAt revokedAt';

export function Keys() {
  const [keys, setKeys] = useState<ApiKey[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const [copied, setCopied] = useState(false);
  const load = () => gql<{ apiKeys: ApiKey[] }>(`{ apiKeys { ${KEY_FIELDS} } }`).then((d) => setKeys(d.apiKeys), setError);
  useEffect(() => void load(), []);
  const create = onSubmit(async (fields) => {
    const made = await gql<{ createApiKey: { secret: string; apiKey: ApiKey } }>(
      `mutation($n: String!, $p: Permission!) { createApiKey(name: $n, permission: $p) { secret apiKey { ${KEY_FIELDS} } } }`,
      { n: field(fields, 'name'), p: field(fields, 'permission') },
    );
    setSecret({ name: made.createApiKey.apiKey.name, secret: made.createApiKey.secret });
    setCopied(false);
    void load();
  }, setError);
  async function revoke(key: ApiKey) {
    if (!confirm(`Revoke the key “${key.name}”? Programs using it stop working at once.`)) return;
    try {
      await gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id });
      void load();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <main>
      <h1>API keys</h1>
      <form class="inline" onSubmit={create} aria-label="Create an API key">
        <label>Name <input name="name" required maxLength={64} placeholder="kitchen-gateway" /></label>
        <label>
          Permission
          <select name="permission">
            <option value="READ">READ</option>
            <option value="WRITE" selected>WRITE</option>
            <option value="ADMIN">ADMIN</option>
          </select>
        </label>
        <button type="submit">Create key</button>
      </form>
      {error !== null && <ErrorNote error={error} />}
      {secret && (
        <div class="secret" role="status">
          <p>The secret of “{secret.name}”. It is shown only now:</p>
          <p><code aria-label="New key secret">{secret.secret}</code></p>
          <button type="button" onClick={() => void navigator.clipboard?.writeText(secret.secret).then(() => setCopied(true))}>
            {copied ? 'Copied' : 'Copy secret'}
          </button>
        </div>
      )}
      <table aria-label="API keys">
        <thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Permission</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">State</th></tr></thead>
        <tbody>
          {keys.map((k) => (
            <tr key={k.id}>
              <td>{k.name}</td>
              <td><code>{k.prefix}</code></td>
              <td>{k.permission}</td>
              <td>{when(k.createdAt)}</td>
              <td>{when(k.lastUsedAt)}</td>
              <td>
                {k.revokedAt ? `revoked ${when(k.revokedAt)}` : (
                  <button type="button" onClick={() => void revoke(k)} aria-label={`Revoke ${k.name}`}>Revoke</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

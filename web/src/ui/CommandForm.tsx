// Sending a command and watching it through `commandUpdated`.

import { useEffect, useState } from 'preact/hooks';
import { json, when } from '../lib/format';
import { ApiError, gql } from '../lib/graphql';
import { subscribe } from '../lib/live';
import { ErrorNote } from './Login';

export interface Command {
  id: string;
  deviceId: string;
  service: string;
  payload: unknown;
  status: 'PENDING' | 'DELIVERED' | 'SUCCEEDED' | 'FAILED' | 'EXPIRED';
  result: unknown;
  createdAt: string;
  updatedAt: string;
  expiresAt: string;
}

export const COMMAND_FIELDS = 'id deviceId service payload status result createdAt updatedAt expiresAt';
const FINAL = new Set(['SUCCEEDED', 'FAILED', 'EXPIRED']);

/** Keeps `command` current until it is final. */
export function useWatched(command: Command): Command {
  const [current, setCurrent] = useState(command);
  useEffect(() => {
    if (FINAL.has(command.status)) return;
    return subscribe<{ commandUpdated: Command }>(
      `subscription($id: ID!) { commandUpdated(id: $id) { ${COMMAND_FIELDS} } }`,
      () => ({ id: command.id }),
      { next: ({ commandUpdated }) => setCurrent(commandUpdated) },
    );
  }, [command.id]);
  return current;
}

export function CommandRow({ command, showDevice }: { command: Command; showDevice?: string }) {
  const c = useWatched(command);
  return (
    <tr>
      <td>{when(c.createdAt)}</td>
      {showDevice !== undefined && <td>{showDevice}</td>}
      <td>{c.service}</td>
      <td class="payload"><code>{json(c.payload)}</code></td>
      <td><span class={`badge badge-${c.status.toLowerCase()}`}>{c.status}</span></td>
      <td class="payload"><code>{c.result === null || c.result === undefined ? '—' : json(c.result)}</code></td>
    </tr>
  );
}

export function CommandForm({ deviceId, onSent }: { deviceId: string; onSent: (c: Command) => void }) {
  const [error, setError] = useState<unknown>(null);
  async function submit(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    let payload: unknown = null;
    const text = String(data.get('payload') ?? '').trim();
    try {
      payload = text === '' ? null : JSON.parse(text);
    } catch (e) {
      setError(new ApiError(`the payload is not JSON: ${(e as Error).message}`, 'BAD_USER_INPUT'));
      return;
    }
    setError(null);
    try {
      const sent = await gql<{ sendCommand: Command }>(
        `mutation($i: SendCommandInput!) { sendCommand(input: $i) { ${COMMAND_FIELDS} } }`,
        { i: { deviceId, service: String(data.get('service')), payload, timeoutSeconds: Number(data.get('timeout')) } },
      );
      onSent(sent.sendCommand);
    } catch (e) {
      setError(e);
    }
  }
  return (
    <form class="inline" onSubmit={submit} aria-label="Send a command">
      <label>
        Service
        <input name="service" required placeholder="e.g. set" />
      </label>
      <label>
        Payload (JSON)
        <input name="payload" placeholder='{"on": true}' />
      </label>
      <label>
        Timeout (s)
        <input name="timeout" type="number" min="1" max="86400" value="60" required />
      </label>
      <button type="submit">Send command</button>
      {error !== null && <ErrorNote error={error} />}
    </form>
  );
}

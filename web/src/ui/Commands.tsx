// Recent commands of every device, each watched live until it is final.

import { useEffect, useState } from 'preact/hooks';
import { gql } from '../lib/graphql';
import { COMMAND_FIELDS, type Command, CommandRow } from './CommandForm';
import { devices, loadDevices } from './Devices';
import { ErrorNote } from './Login';

export function Commands() {
  const [commands, setCommands] = useState<Command[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    void loadDevices();
    gql<{ commands: { nodes: Command[] } }>(`{ commands(first: 100) { nodes { ${COMMAND_FIELDS} } } }`)
      .then((d) => setCommands(d.commands.nodes), setError);
  }, []);
  return (
    <main>
      <h1>Commands</h1>
      <p class="summary">Send a command from a device's page; each one is followed here until it is answered or expires.</p>
      {error !== null && <ErrorNote error={error} />}
      <table aria-label="Commands">
        <thead><tr><th scope="col">Sent</th><th scope="col">Device</th><th scope="col">Service</th><th scope="col">Payload</th><th scope="col">Status</th><th scope="col">Result</th></tr></thead>
        <tbody>
          {(commands ?? []).map((c) => (
            <CommandRow key={c.id} command={c} showDevice={devices.value.get(c.deviceId)?.name ?? c.deviceId} />
          ))}
        </tbody>
      </table>
      {commands?.length === 0 && <p class="empty">No commands yet.</p>}
    </main>
  );
}

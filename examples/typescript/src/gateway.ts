// A gateway written directly on graphql-ws, without Ferrite's Rust gateway
// library: it hosts one thermometer, publishes a reading every few seconds
// and answers its commands.
//
//   FERRITE_URL=http://127.0.0.1:8080 FERRITE_API_KEY=fer_… \
//   node dist/gateway.js [CONNECTOR_ID]
//
// What matters for a gateway:
// - `connectorId` in `connection_init` makes the socket a connector session:
//   devices registered over it are ONLINE while it is open and go OFFLINE
//   when it ends.
// - `lazy: false`: with graphql-ws's default (`lazy: true`) the socket
//   closes whenever no operation runs, and the devices go OFFLINE half a
//   second after registering.
// - On every (re)connection, register the devices again (the server binds
//   them to the new session) and subscribe to `commands` again (commands
//   queued while away come first). Delivery is at least once: answer a
//   command id once, and skip one already answered.
// - An API key does not expire; revoking it closes the socket with 4403,
//   after which retrying is pointless: `shouldRetry` stops there.
// - Readings carry an `idempotencyKey`, so a publish retried after a
//   dropped connection is stored once.

import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

const REGISTER = `mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { id status } }`;
const PUBLISH = `mutation($input: EventInput!) { publishEvent(input: $input) { id } }`;
const COMMANDS = `subscription { commands { id deviceId service payload } }`;
const RESPOND = `mutation($id: ID!, $ok: Boolean!, $result: JSON) { respondCommand(id: $id, success: $ok, result: $result) { id status } }`;

interface Command {
  id: string;
  deviceId: string;
  service: string;
  payload: unknown;
}

/** Runs one operation over the socket and returns its data. */
function run<T>(client: Client, query: string, variables: Record<string, unknown>): Promise<T> {
  return new Promise((resolve, reject) => {
    let data: T | undefined;
    client.subscribe<T>(
      { query, variables },
      {
        next: (result) => {
          if (result.errors?.length) reject(new Error(JSON.stringify(result.errors)));
          else data = result.data as T;
        },
        error: reject,
        complete: () => resolve(data as T),
      },
    );
  });
}

export interface Gateway {
  client: Client;
  stop(): Promise<void>;
}

export function startGateway(origin: string, apiKey: string, connectorId: string, log = console.log): Gateway {
  let deviceId: string | null = null;
  let reading = 0;
  let stopCommands: (() => void) | null = null;
  const answered = new Set<string>();

  const client = createClient({
    url: `${origin.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: Infinity,
    // Keep retrying restarts and network drops; a refused key (4403) will
    // not start working by itself.
    shouldRetry: (event) => !(event && typeof event === 'object' && 'code' in event && event.code === 4403),
    connectionParams: { Authorization: `Bearer ${apiKey}`, connectorId },
    on: {
      connected: () => void online(),
      closed: () => {
        stopCommands?.();
        stopCommands = null;
      },
    },
  });

  async function online() {
    try {
      const { registerDevice } = await run<{ registerDevice: { id: string; status: string } }>(client, REGISTER, {
        input: { externalId: `${connectorId}-thermometer`, name: 'Thermometer', type: 'thermometer' },
      });
      deviceId = registerDevice.id;
      log(JSON.stringify({ registered: deviceId, status: registerDevice.status }));
      stopCommands = client.subscribe<{ commands: Command }>(
        { query: COMMANDS },
        {
          next: ({ data }) => data && void answer(data.commands),
          error: (error) => console.error('gateway: commands ended:', error),
          complete: () => {},
        },
      );
    } catch (error) {
      console.error('gateway: going online failed:', error);
    }
  }

  async function answer(command: Command) {
    if (answered.has(command.id)) return;
    const ok = command.service === 'ping';
    const { respondCommand } = await run<{ respondCommand: { status: string } }>(client, RESPOND, {
      id: command.id,
      ok,
      result: ok ? { pong: command.payload } : { error: `unknown service ${command.service}` },
    });
    answered.add(command.id);
    log(JSON.stringify({ answered: command.id, status: respondCommand.status }));
  }

  const timer = setInterval(async () => {
    if (!deviceId) return;
    const n = reading++;
    try {
      await run(client, PUBLISH, {
        input: { deviceId, service: 'temperature', payload: { celsius: 20 + (n % 10) / 10 }, idempotencyKey: `${connectorId}-${n}` },
      });
    } catch (error) {
      reading = n; // published again with the same key next time
      console.error('gateway: publish failed:', error);
    }
  }, 2_000);

  return {
    client,
    async stop() {
      clearInterval(timer);
      await client.dispose();
    },
  };
}

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const gateway = startGateway(
    process.env.FERRITE_URL ?? 'http://127.0.0.1:8080',
    process.env.FERRITE_API_KEY ?? '',
    process.argv[2] ?? 'ts-gateway',
  );
  const quit = () => void gateway.stop().finally(() => process.exit(0));
  process.on('SIGTERM', quit);
  process.on('SIGINT', quit);
}

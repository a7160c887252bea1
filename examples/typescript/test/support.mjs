// What the client-example tests share: publishing over HTTP and reading a
// child process's JSON lines.

/** Registers a device for `token`'s user; its id. */
export async function registerDevice(server, token, externalId) {
  const data = await server.gql(token, 'mutation($x: String!) { registerDevice(input: {externalId: $x}) { id } }', { x: externalId });
  return data.registerDevice.id;
}

/** Publishes `count` events one by one; their ids, in order. */
export async function publish(server, token, deviceId, count) {
  const ids = [];
  for (let i = 0; i < count; i++) {
    const data = await server.gql(
      token,
      'mutation($d: ID!, $v: Float!) { publishEvent(input: {deviceId: $d, service: "temperature", payload: $v}) { id } }',
      { d: deviceId, v: 20 + i / 10 },
    );
    ids.push(data.publishEvent.id);
  }
  return ids;
}

/** A child's stdout as JSON lines (events), and its stderr kept for failures. */
export class Lines {
  constructor(child) {
    this.parsed = [];
    this.errors = '';
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      pending += chunk;
      const complete = pending.split('\n');
      pending = complete.pop();
      for (const line of complete) if (line.trim()) this.parsed.push(JSON.parse(line));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      this.errors = (this.errors + chunk).slice(-20_000);
    });
  }

  events() {
    return this.parsed;
  }

  stderr() {
    return this.errors;
  }
}

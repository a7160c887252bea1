// One device: what it is, its status, the latest value of each service,
// charts of its numeric fields, its recent events and commands.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { EventLog, type LogEvent } from '../lib/eventlog';
import { ago, json, when } from '../lib/format';
import { gql } from '../lib/graphql';
import { route, setParams } from '../lib/router';
import { Chart, type Line, RANGES } from './Chart';
import { COMMAND_FIELDS, type Command, CommandForm, CommandRow } from './CommandForm';
import { DEVICE_FIELDS, type Device, StatusBadge, devices, loadDevices } from './Devices';
import { EventTable, useLiveLog } from './Events';
import { ErrorNote } from './Login';
import { StatusTimeline } from './StatusTimeline';

/** Every numeric leaf of a payload, as dotted paths ("" for a bare number). */
export function numericFields(payload: unknown, prefix = ''): string[] {
  if (typeof payload === 'number' || typeof payload === 'boolean') return [prefix];
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return [];
  return Object.entries(payload).flatMap(([key, value]) =>
    key.includes('.') ? [] : numericFields(value, prefix ? `${prefix}.${key}` : key),
  );
}

/**
 * A chart line in the URL: `service:field` of this device, or
 * `service:field@deviceId` of another one.
 */
export function parseLine(spec: string, here: string): Line {
  const at = spec.lastIndexOf('@');
  const deviceId = at >= 0 ? spec.slice(at + 1) : here;
  const [service, field = ''] = (at >= 0 ? spec.slice(0, at) : spec).split(':');
  const value = field ? `${service}.${field}` : service;
  const other = deviceId === here ? null : devices.value.get(deviceId)?.name ?? deviceId;
  return { deviceId, service, field, label: other ? `${other}: ${value}` : value };
}

/** Where a range ending now starts, to the minute (so it is stable between renders). */
function startOfRange(range: string): number {
  const span = (RANGES[range] ?? RANGES['1h']).span;
  return Math.floor((Date.now() - span) / 60_000) * 60_000;
}

function lineKey(line: Line): string {
  return `${line.service}:${line.field}@${line.deviceId}`;
}

/** Adds a value of another device to this device's chart. */
function CompareForm({ deviceId, onAdd }: { deviceId: string; onAdd: (line: string) => void }) {
  const [other, setOther] = useState('');
  const [values, setValues] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setValues([]);
    if (!other) return;
    gql<{ events: { nodes: { service: string; payload: unknown }[] } }>(
      'query($id: ID!) { events(first: 100, filter: { deviceIds: [$id] }) { nodes { service payload } } }',
      { id: other },
    ).then((d) => {
      const found = new Set(d.events.nodes.flatMap((e) => numericFields(e.payload).map((f) => `${e.service}:${f}`)));
      setValues([...found].sort());
      setError(null);
    }, setError);
  }, [other]);
  const candidates = [...devices.value.values()].filter((d) => d.id !== deviceId).sort((a, b) => a.name.localeCompare(b.name));
  if (candidates.length === 0) return null;
  return (
    <form class="inline" aria-label="Compare with another device" onSubmit={(event) => {
      event.preventDefault();
      const value = new FormData(event.currentTarget).get('value');
      if (other && value) onAdd(`${value}@${other}`);
    }}>
      <label>
        Compare with
        <select value={other} onChange={(e) => setOther(e.currentTarget.value)}>
          <option value="">another device…</option>
          {candidates.map((d) => <option key={d.id} value={d.id}>{d.name}</option>)}
        </select>
      </label>
      <label>
        Value
        <select name="value" disabled={values.length === 0}>
          {values.map((v) => <option key={v} value={v}>{v.replace(':', '.').replace(/\.$/, '')}</option>)}
        </select>
      </label>
      <button type="submit" disabled={values.length === 0}>Add to chart</button>
      {other && values.length === 0 && error === null && <span class="empty">No numeric values in its recent events.</span>}
      {error !== null && <ErrorNote error={error} />}
    </form>
  );
}

export function DevicePage({ id }: { id: string }) {
  useEffect(() => void loadDevices(), []);
  const [fetched, setFetched] = useState<Device | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [commands, setCommands] = useState<Command[]>([]);
  const device = devices.value.get(id) ?? fetched;
  const params = route.value.searchParams;
  const range = params.get('range') ?? '1h';
  const chosen = (params.get('lines') ?? '').split(',').filter(Boolean);
  const log = useMemo(() => new EventLog(2_000), [id]);
  const [version, logError] = useLiveLog(log, useMemo(() => ({ deviceIds: [id] }), [id]));

  useEffect(() => {
    gql<{ device: Device; commands: { nodes: Command[] } }>(
      `query($id: ID!) { device(id: $id) { ${DEVICE_FIELDS} }
        commands(first: 20, filter: { deviceIds: [$id] }) { nodes { ${COMMAND_FIELDS} } } }`,
      { id },
    ).then((d) => { setFetched(d.device); setCommands(d.commands.nodes); }, setError);
  }, [id]);

  // The latest event of each service, from the live log.
  const latest = new Map<string, LogEvent>();
  for (let i = 0; i < log.visible && latest.size < 50; i++) {
    const row = log.at(i);
    if (row?.kind === 'event' && !latest.has(row.event.service)) latest.set(row.event.service, row.event);
  }
  const fields = [...latest.values()].flatMap((e) =>
    numericFields(e.payload).map((f) => `${e.service}:${f}`),
  );
  const toggle = (line: string) => {
    const next = chosen.includes(line) ? chosen.filter((l) => l !== line) : [...chosen, line];
    setParams({ lines: next.join(',') });
  };
  const lines: Line[] = chosen.map((c) => parseLine(c, id));
  const others = lines.filter((l) => l.deviceId !== id);
  const customFrom = params.get('from');
  const customTo = params.get('to');

  if (!device) {
    return (
      <main>
        <h1>Device</h1>
        {error !== null ? <ErrorNote error={error} /> : <p>Loading…</p>}
      </main>
    );
  }
  return (
    <main>
      <p><a href="/devices">← Devices</a></p>
      <h1>{device.name} <StatusBadge status={device.status} /></h1>
      <dl class="facts">
        <dt>External id</dt><dd><code>{device.externalId}</code></dd>
        <dt>Type</dt><dd>{device.type}</dd>
        <dt>Location</dt><dd>{device.location ?? '—'}</dd>
        <dt>Gateway</dt><dd>{device.connectorId ?? '—'}</dd>
        <dt>Last seen</dt><dd>{device.status === 'ONLINE' ? 'now' : `${ago(device.lastSeenAt)} (${when(device.lastSeenAt)})`}</dd>
        <dt>Attributes</dt><dd><code>{json(device.attributes)}</code></dd>
      </dl>

      <h2>Latest values</h2>
      <table aria-label="Latest values">
        <thead><tr><th scope="col">Service</th><th scope="col">Value</th><th scope="col">At</th><th scope="col">Chart</th></tr></thead>
        <tbody>
          {[...latest.values()].map((e) => (
            <tr key={e.service}>
              <td>{e.service}</td>
              <td class="payload"><code>{json(e.payload)}</code></td>
              <td>{when(e.occurredAt ?? e.receivedAt)}</td>
              <td>
                {numericFields(e.payload).map((f) => {
                  const line = `${e.service}:${f}`;
                  return (
                    <label key={line} class="check">
                      <input type="checkbox" checked={chosen.includes(line)} onChange={() => toggle(line)} />
                      {f || e.service}
                    </label>
                  );
                })}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {latest.size === 0 && <p class="empty">No events yet.</p>}

      <h2>Status</h2>
      <StatusTimeline device={device}
        from={customFrom && customTo ? Date.parse(customFrom) : startOfRange(range)}
        to={customFrom && customTo ? Date.parse(customTo) : null} />

      <h2>Chart</h2>
      <div class="filters">
        {Object.keys(RANGES).map((r) => (
          <button key={r} type="button" aria-pressed={range === r && !customFrom}
            onClick={() => setParams({ range: r, from: null, to: null })}>{r}</button>
        ))}
        <label>From <input type="datetime-local" value={customFrom ?? ''} onChange={(e) => setParams({ from: e.currentTarget.value })} /></label>
        <label>To <input type="datetime-local" value={customTo ?? ''} onChange={(e) => setParams({ to: e.currentTarget.value })} /></label>
      </div>
      {lines.length === 0 && fields.length > 0 && <p class="empty">Tick a value above to chart it.</p>}
      <CompareForm deviceId={id} onAdd={(line) => !chosen.includes(line) && setParams({ lines: [...chosen, line].join(',') })} />
      {others.length > 0 && (
        <ul class="inline" aria-label="Lines from other devices">
          {others.map((l) => (
            <li key={lineKey(l)}>
              {l.label}{' '}
              <button type="button" aria-label={`Remove ${l.label} from the chart`}
                onClick={() => setParams({ lines: chosen.filter((c) => c !== lineKey(l)).join(',') })}>×</button>
            </li>
          ))}
        </ul>
      )}
      {lines.length > 0 && (
        <Chart lines={lines} range={range}
          from={customFrom && customTo ? Date.parse(customFrom) : undefined}
          to={customFrom && customTo ? Date.parse(customTo) : undefined} />
      )}

      <h2>Commands</h2>
      <CommandForm deviceId={id} onSent={(c) => setCommands((list) => [c, ...list])} />
      <table aria-label="Commands">
        <thead><tr><th scope="col">Sent</th><th scope="col">Service</th><th scope="col">Payload</th><th scope="col">Status</th><th scope="col">Result</th></tr></thead>
        <tbody>{commands.map((c) => <CommandRow key={c.id} command={c} />)}</tbody>
      </table>

      <h2>Recent events</h2>
      {logError !== null && <ErrorNote error={logError} />}
      <EventTable log={log} version={version} label="Recent events" showDevice={false} />
    </main>
  );
}

// Every device the caller can see, live from `deviceChanged`.

import { signal } from '@preact/signals';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ago } from '../lib/format';
import { allPages } from '../lib/graphql';
import { reconnects, subscribe } from '../lib/live';
import { route, setParams } from '../lib/router';
import { ErrorNote } from './Login';
import { Spacer, useVisibleRange } from './virtual';

export interface Device {
  id: string;
  externalId: string;
  name: string;
  type: string;
  location: string | null;
  status: 'ONLINE' | 'OFFLINE' | 'DISCONNECTED';
  connectorId: string | null;
  lastSeenAt: string | null;
  attributes: unknown;
}

export const DEVICE_FIELDS = 'id externalId name type location status connectorId lastSeenAt attributes';

/** The devices, by id; shared by the pages that list or pick devices. */
export const devices = signal<Map<string, Device>>(new Map());
export const devicesError = signal<unknown>(null);
let loaded: Promise<void> | null = null;

/** Loads every device page by page and keeps the map live. */
export function loadDevices(): Promise<void> {
  if (loaded) return loaded;
  loaded = (async () => {
    // Subscribed first, so a change during a load is not missed; the
    // load's result only fills devices the subscription has not told of.
    const changed = new Map<string, Device | null>();
    let loading = true;
    // Changes are applied once a frame: a gateway of 1 000 devices going
    // OFFLINE copies the map once, not a thousand times.
    const pending = new Map<string, Device | null>();
    let frame = 0;
    const flush = () => {
      frame = 0;
      const next = new Map(devices.value);
      for (const [id, device] of pending) {
        if (device) next.set(id, device);
        else next.delete(id);
      }
      pending.clear();
      devices.value = next;
    };
    subscribe<{ deviceChanged: { kind: string; device: Device } }>(
      `subscription { deviceChanged { kind device { ${DEVICE_FIELDS} } } }`,
      () => ({}),
      {
        next: ({ deviceChanged: { kind, device } }) => {
          const value = kind === 'DELETED' ? null : device;
          if (loading) changed.set(device.id, value);
          pending.set(device.id, value);
          if (!frame) frame = requestAnimationFrame(flush);
        },
        error: (error) => {
          devicesError.value = error;
        },
      },
    );
    await reloadDevices(changed, true);
    loading = false;
    // Changes while the socket was down are not replayed: read the list
    // again after every reconnect (the old list stays up meanwhile).
    let seen = reconnects.value;
    reconnects.subscribe((n) => {
      if (n === seen) return;
      seen = n;
      changed.clear();
      loading = true;
      void reloadDevices(changed, false)
        .catch((error) => {
          devicesError.value = error;
        })
        .finally(() => {
          loading = false;
        });
    });
  })().catch((error) => {
    devicesError.value = error;
    loaded = null;
  });
  return loaded;
}

/**
 * Reads every device, page by page, then applies the changes the
 * subscription reported meanwhile (they are newer). `progressive`: show
 * each page as it arrives (the first load), else swap the list at the end.
 */
async function reloadDevices(changed: Map<string, Device | null>, progressive: boolean): Promise<void> {
  const all = new Map<string, Device>();
  const merged = () => {
    const next = new Map(all);
    for (const [id, device] of changed) {
      if (device) next.set(id, device);
      else next.delete(id);
    }
    return next;
  };
  await allPages<Device>(
    `query($after: String) { devices(first: 500, after: $after) {
      nodes { ${DEVICE_FIELDS} } pageInfo { hasNextPage endCursor } } }`,
    'devices',
    {},
    Infinity,
    (page) => {
      for (const device of page) all.set(device.id, device);
      if (progressive) devices.value = merged();
    },
  );
  devices.value = merged();
}

export function StatusBadge({ status }: { status: Device['status'] }) {
  return <span class={`badge badge-${status.toLowerCase()}`}>{status}</span>;
}

export function Devices() {
  const [ready, setReady] = useState(devices.value.size > 0);
  useEffect(() => {
    void loadDevices().then(() => setReady(true));
  }, []);
  const params = route.value.searchParams;
  const search = params.get('q') ?? '';
  const status = params.get('status') ?? '';
  const all = devices.value;
  const rows = useMemo(() => {
    const needle = search.trim().toLowerCase();
    const list = [...all.values()].filter(
      (d) =>
        (!status || d.status === status) &&
        (!needle ||
          d.name.toLowerCase().includes(needle) ||
          d.externalId.toLowerCase().includes(needle) ||
          d.type.toLowerCase().includes(needle) ||
          (d.location ?? '').toLowerCase().includes(needle)),
    );
    list.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    return list;
  }, [all, search, status]);
  const scroller = useRef<HTMLDivElement>(null);
  const [start, end] = useVisibleRange(scroller, rows.length);
  const online = [...all.values()].filter((d) => d.status === 'ONLINE').length;
  return (
    <main>
      <h1>Devices</h1>
      <p class="summary">
        {ready ? `${all.size} devices, ${online} online` : `Loading devices… ${all.size || ''}`}
      </p>
      {devicesError.value !== null && <ErrorNote error={devicesError.value} />}
      <div class="filters">
        <label>
          Search
          <input type="search" value={search} onInput={(e) => setParams({ q: e.currentTarget.value })}
            placeholder="name, id, type, location" />
        </label>
        <label>
          Status
          <select value={status} onChange={(e) => setParams({ status: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="ONLINE">ONLINE</option>
            <option value="OFFLINE">OFFLINE</option>
            <option value="DISCONNECTED">DISCONNECTED</option>
          </select>
        </label>
      </div>
      <div class="scroller" ref={scroller}>
        <table aria-label="Devices" aria-rowcount={rows.length + 1}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col" class="wide">Last seen</th>
              <th scope="col" class="wide">Type</th>
              <th scope="col">Location</th>
              <th scope="col">Gateway</th>
            </tr>
          </thead>
          <tbody>
            <Spacer rows={start} columns={6} />
            {rows.slice(start, end).map((d, i) => (
              <tr key={d.id} aria-rowindex={start + i + 2}>
                <td class="name"><a href={`/devices/${encodeURIComponent(d.id)}`}>{d.name}</a> <small class="wide">{d.externalId}</small></td>
                <td><StatusBadge status={d.status} /></td>
                <td class="wide">{d.status === 'ONLINE' ? 'now' : ago(d.lastSeenAt)}</td>
                <td class="wide">{d.type}</td>
                <td>{d.location ?? '—'}</td>
                <td>{d.connectorId ?? '—'}</td>
              </tr>
            ))}
            <Spacer rows={rows.length - end} columns={6} />
          </tbody>
        </table>
        {ready && rows.length === 0 && <p class="empty">No device matches.</p>}
      </div>
    </main>
  );
}

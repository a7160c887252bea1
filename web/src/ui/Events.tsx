// The live event log: history first, then `events(after: lastId)`; every
// reconnect resumes from the last id taken in, duplicates are dropped, an
// outage leaves a marker saying how many events the resume brought.

import { useEffect, useMemo, useReducer, useRef, useState } from 'preact/hooks';
import { EventLog, type LogEvent, type MissedPage, describeCatchUp, readMissed } from '../lib/eventlog';
import { json, when } from '../lib/format';
import { ApiError, allPages, gql } from '../lib/graphql';
import { linkStatus, reconnects, subscribe } from '../lib/live';
import { route, setParams } from '../lib/router';
import { devices, loadDevices } from './Devices';
import { ErrorNote } from './Login';
import { Spacer, useVisibleRange } from './virtual';

const EVENT_FIELDS = 'id deviceId service payload occurredAt receivedAt';
const CAPACITY = 10_000;
const HISTORY = 200;
/** A resume counts what it missed exactly up to this many events (200 pages of ids). */
const COUNT_MISSED_UP_TO = 100_000;

export interface EventFilter {
  deviceIds?: string[];
  services?: string[];
  locations?: string[];
  since?: string;
  until?: string;
}

export function filterFromParams(params: URLSearchParams): EventFilter {
  const filter: EventFilter = {};
  const device = params.get('device');
  const service = params.get('service');
  const location = params.get('location');
  const since = params.get('since');
  if (device) filter.deviceIds = [device];
  if (service) filter.services = [service];
  if (location) filter.locations = [location];
  if (since) filter.since = new Date(since).toISOString();
  return filter;
}

const missedPage = (idsOnly: boolean) =>
  `query($f: EventFilter, $after: String) { events(first: 500, filter: $f, after: $after) {
    nodes { ${idsOnly ? 'id' : EVENT_FIELDS} } pageInfo { hasNextPage endCursor } } }`;

/**
 * Keeps `log` filled and live for `filter`; returns a render counter.
 *
 * History first, then `events(after: lastId)`. When the socket drops, the
 * subscription is ended at once (else graphql-ws would re-send it on
 * reconnect and the server would replay the outage one message per event);
 * once the socket is back, what was missed is read over HTTP (`readMissed`),
 * and the subscription resumes after the newest of it. Live events that
 * arrive while older pages are still being read wait their turn, so the log
 * takes everything in id order. Should the read fail, the subscription
 * resumes from `lastId` and replays the outage itself: slower, as exact.
 */
export function useLiveLog(log: EventLog, filter: EventFilter): [number, unknown] {
  const [version, bump] = useReducer((n: number) => n + 1, 0);
  const [error, setError] = useState<unknown>(null);
  const key = JSON.stringify(filter);
  useEffect(() => {
    let stopped = false;
    let frame = 0;
    // Renders at most once a frame, whatever the event rate.
    const render = () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; bump(0); });
    };
    /** Ends the current subscription. */
    let unfollow = () => {};
    /** Live events held back while a catch-up is read (null: none is). */
    let waiting: LogEvent[] | null = null;
    /** Counts resumes, so a catch-up overtaken by another drop gives up. */
    let resumes = 0;

    const follow = (after: number) => {
      unfollow();
      unfollow = subscribe<{ events: LogEvent }>(
        `subscription($f: EventFilter, $after: ID) { events(filter: $f, after: $after) { ${EVENT_FIELDS} } }`,
        () => ({ f: filter, after: String(Math.max(after, log.lastId)) }),
        {
          next: ({ events }) => {
            if (waiting) waiting.push(events);
            else if (log.accept(events)) render();
          },
          streamError: (e: ApiError) => {
            if (e.code === 'EVENTS_PRUNED') {
              const through = String(e.extensions.prunedThrough ?? '?');
              if (log.lastId > 0) log.mark(`Events up to #${through} were deleted by retention before they could be shown`, 'warn');
              log.lastId = Math.max(log.lastId, Number(through) || 0);
            } else {
              setError(e);
            }
            render();
          },
          error: setError,
        },
      );
    };

    /** The history, then live: how the log starts, and restarts after a failed start. */
    let started = false;
    const start = async () => {
      const history = await gql<{ events: { nodes: LogEvent[] } }>(
        `query($f: EventFilter) { events(first: ${HISTORY}, filter: $f) { nodes { ${EVENT_FIELDS} } } }`,
        { f: filter },
      );
      if (stopped) return;
      for (const event of [...history.events.nodes].reverse()) log.accept(event);
      started = true;
      setError(null);
      render();
      follow(log.lastId);
    };

    const resume = async () => {
      if (!started) return start().catch(setError);
      const attempt = ++resumes;
      const current = () => !stopped && attempt === resumes;
      unfollow();
      log.catchUp();
      waiting = [];
      render();
      const readPage = async (after: string | null, idsOnly: boolean) =>
        (await gql<{ events: MissedPage }>(missedPage(idsOnly), { f: filter, after })).events;
      try {
        const missed = await readMissed(readPage, log.lastId, log.capacity, COUNT_MISSED_UP_TO, (newest) => {
          if (current()) follow(newest);
        });
        if (!current()) return;
        for (const event of missed.events) log.accept(event);
        log.caughtUp(missed);
        for (const event of waiting) log.accept(event);
      } catch {
        if (!current()) return;
        // The socket is back but HTTP failed: the stream replays it all
        // from `lastId`, the held events included.
        log.caughtUp(null);
        waiting = null;
        follow(log.lastId);
      }
      waiting = null;
      render();
    };

    const stopWatchingLink = linkStatus.subscribe((status) => {
      if (status === 'reconnecting') {
        resumes += 1;
        unfollow();
      }
    });
    const seenReconnects = reconnects.value;
    const stopWatchingReconnects = reconnects.subscribe((n) => {
      if (n !== seenReconnects) void resume();
    });
    start().catch(setError);
    return () => {
      stopped = true;
      unfollow();
      stopWatchingLink();
      stopWatchingReconnects();
      cancelAnimationFrame(frame);
    };
  }, [key]);
  return [version, error];
}

function csvCell(value: unknown): string {
  const text = typeof value === 'string' ? value : value === null || value === undefined ? '' : JSON.stringify(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Every event of the filter (up to 100 000), oldest first, as CSV. */
async function exportCsv(filter: EventFilter): Promise<void> {
  const rows: string[] = ['id,device_id,device,service,occurred_at,received_at,payload'];
  const events = await allPages<LogEvent>(
    `query($f: EventFilter, $after: String) { events(first: 500, filter: $f, after: $after) {
      nodes { ${EVENT_FIELDS} } pageInfo { hasNextPage endCursor } } }`,
    'events',
    { f: filter },
    100_000,
  );
  for (const e of events.reverse()) {
    const name = devices.value.get(e.deviceId)?.name ?? '';
    rows.push([e.id, e.deviceId, name, e.service, e.occurredAt, e.receivedAt, e.payload].map(csvCell).join(','));
  }
  const url = URL.createObjectURL(new Blob([`${rows.join('\n')}\n`], { type: 'text/csv' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = 'ferrite-events.csv';
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function EventTable({ log, version, label, showDevice = true }: {
  log: EventLog; version: number; label: string; showDevice?: boolean;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const count = log.visible;
  const [start, end] = useVisibleRange(scroller, count);
  const columns = showDevice ? 5 : 4;
  const rows = [];
  for (let i = start; i < end; i++) {
    const row = log.at(i);
    if (!row) continue;
    if (row.kind === 'marker') {
      rows.push(
        <tr key={row.key} class={`marker marker-${row.tone}`}>
          <td colSpan={columns} role="note">{row.text}</td>
        </tr>,
      );
      continue;
    }
    const e = row.event;
    rows.push(
      <tr key={row.key}>
        <td>{e.id}</td>
        <td>{when(e.occurredAt ?? e.receivedAt)}</td>
        {showDevice && (
          <td><a href={`/devices/${encodeURIComponent(e.deviceId)}`}>{devices.value.get(e.deviceId)?.name ?? e.deviceId}</a></td>
        )}
        <td>{e.service}</td>
        <td class="payload"><code>{json(e.payload)}</code></td>
      </tr>,
    );
  }
  return (
    <div class="scroller" ref={scroller} data-version={version}>
      <table aria-label={label}>
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Time</th>
            {showDevice && <th scope="col">Device</th>}
            <th scope="col">Service</th>
            <th scope="col">Payload</th>
          </tr>
        </thead>
        <tbody>
          <Spacer rows={start} columns={columns} />
          {rows}
          <Spacer rows={count - end} columns={columns} />
        </tbody>
      </table>
      {count === 0 && <p class="empty">No events yet.</p>}
    </div>
  );
}

export function Events() {
  useEffect(() => void loadDevices(), []);
  const params = route.value.searchParams;
  const filter = useMemo(() => filterFromParams(params), [params.toString()]);
  const log = useMemo(() => new EventLog(CAPACITY), [JSON.stringify(filter)]);
  const [version, error] = useLiveLog(log, filter);
  const [, repaint] = useReducer((n: number) => n + 1, 0);
  const [exporting, setExporting] = useState<unknown>(null);
  const list = [...devices.value.values()].sort((a, b) => a.name.localeCompare(b.name));
  const locations = [...new Set(list.map((d) => d.location).filter((l): l is string => !!l))].sort();
  return (
    <main>
      <h1>Events</h1>
      <div class="filters">
        <label>
          Device
          <select value={params.get('device') ?? ''} onChange={(e) => setParams({ device: e.currentTarget.value })}>
            <option value="">any</option>
            {list.map((d) => <option key={d.id} value={d.id}>{d.name}</option>)}
          </select>
        </label>
        <label>
          Service
          <input value={params.get('service') ?? ''} placeholder="e.g. temperature"
            onChange={(e) => setParams({ service: e.currentTarget.value.trim() })} />
        </label>
        <label>
          Location
          <select value={params.get('location') ?? ''} onChange={(e) => setParams({ location: e.currentTarget.value })}>
            <option value="">any</option>
            {locations.map((l) => <option key={l} value={l}>{l}</option>)}
          </select>
        </label>
        <label>
          Since
          <input type="datetime-local" value={params.get('since') ?? ''}
            onChange={(e) => setParams({ since: e.currentTarget.value })} />
        </label>
        <button type="button" onClick={() => { if (log.paused) log.resume(); else log.pause(); repaint(0); }}>
          {log.paused ? `Resume (${log.pending} new)` : 'Pause'}
        </button>
        <button type="button" onClick={() => { setExporting(true); exportCsv(filter).then(() => setExporting(null), setExporting); }}>
          {exporting === true ? 'Exporting…' : 'Export CSV'}
        </button>
      </div>
      {log.paused && log.pending > 0 && <p class="pending" role="status">{log.pending} new events while paused</p>}
      {linkStatus.value === 'reconnecting' && <p class="pending" role="status">Connection lost — reconnecting; nothing will be missed.</p>}
      {linkStatus.value !== 'reconnecting' && !log.catchingUp && log.lastCatchUp && (
        // The marker in the log sits where the outage was, which live
        // events soon push out of view; this line stays.
        <p class="summary catch-up" role="status">
          Back online at {new Date(log.lastCatchUp.at).toLocaleTimeString()}: {describeCatchUp(log.lastCatchUp.missed, log.capacity)}.
        </p>
      )}
      {error !== null && <ErrorNote error={error} />}
      {exporting !== null && exporting !== true && <ErrorNote error={exporting} />}
      <EventTable log={log} version={version} label="Events" />
    </main>
  );
}

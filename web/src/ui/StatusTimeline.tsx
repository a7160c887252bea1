// A device's status over the chart's range: a bar of ONLINE / OFFLINE /
// DISCONNECTED stretches (from `statusHistory`, read again whenever the
// device changes live), and the latest changes as a table.

import { useEffect, useState } from 'preact/hooks';
import { ago, when } from '../lib/format';
import { gql } from '../lib/graphql';
import { type StatusChange, segments, shares } from '../lib/timeline';
import type { Device } from './Devices';
import { ErrorNote } from './Login';

function duration(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 1) return `${Math.round(ms / 1000)} s`;
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.round(minutes / 60);
  return hours < 48 ? `${hours} h` : `${Math.round(hours / 24)} d`;
}

export function StatusTimeline({ device, from, to }: { device: Device; from: number; to: number | null }) {
  const [history, setHistory] = useState<StatusChange[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    gql<{ device: { statusHistory: StatusChange[] } }>(
      'query($id: ID!, $since: DateTime) { device(id: $id) { statusHistory(since: $since, first: 500) { status connectorId at } } }',
      { id: device.id, since: new Date(from).toISOString() },
    ).then((d) => {
      setHistory(d.device.statusHistory);
      setNow(Date.now());
      setError(null);
    }, setError);
    // Read again when the device's presence changes (live, deviceChanged).
  }, [device.id, device.status, device.connectorId, device.lastSeenAt, from]);
  useEffect(() => {
    if (to !== null) return;
    const tick = setInterval(() => setNow(Date.now()), 30_000);
    return () => clearInterval(tick);
  }, [to]);
  const end = to ?? now;
  const parts = segments(history, from, end);
  const span = Math.max(1, end - from);
  const summary = [...shares(parts)]
    .map(([status, share]) => `${status} ${share > 0 && share < 1 ? '< 1' : Math.round(share)} %`)
    .join(', ');
  return (
    <>
      <div class="timeline" role="img" aria-label={`Status from ${when(new Date(from).toISOString())}: ${summary}`}>
        {parts.map((part) => (
          <span key={part.from} class={`timeline-${(part.status ?? 'unknown').toLowerCase()}`}
            style={{ width: `${((part.to - part.from) / span) * 100}%` }}
            title={`${part.status ?? 'no record'}${part.connectorId ? ` on ${part.connectorId}` : ''}: ${when(new Date(part.from).toISOString())} – ${when(new Date(part.to).toISOString())}`} />
        ))}
      </div>
      <p class="summary">{summary}</p>
      {error !== null && <ErrorNote error={error} />}
      {history.length > 0 && (
        <table aria-label="Status history">
          <thead><tr><th scope="col">Since</th><th scope="col">Status</th><th scope="col">Gateway</th><th scope="col">For</th></tr></thead>
          <tbody>
            {history.slice(0, 10).map((change, i) => {
              const until = i === 0 ? Date.now() : Date.parse(history[i - 1].at);
              return (
                <tr key={change.at + change.status}>
                  <td title={when(change.at)}>{ago(change.at)}</td>
                  <td><span class={`badge badge-${change.status.toLowerCase()}`}>{change.status}</span></td>
                  <td>{change.connectorId ?? '—'}</td>
                  <td>{duration(until - Date.parse(change.at))}{i === 0 ? ' so far' : ''}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}

// A uPlot chart of one or more numeric fields: `telemetry` for the range,
// then live events past the cut (see lib/series.ts). Gaps stay gaps.

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { LogEvent } from '../lib/eventlog';
import { gql } from '../lib/graphql';
import { subscribe } from '../lib/live';
import { type Bucket, Series, valueAt } from '../lib/series';
import { ErrorNote } from './Login';

export interface Line {
  deviceId: string;
  service: string;
  field: string;
  label: string;
}

export const RANGES: Record<string, { span: number; bucket: number }> = {
  '1h': { span: 3_600_000, bucket: 10_000 },
  '24h': { span: 86_400_000, bucket: 60_000 },
  '7d': { span: 7 * 86_400_000, bucket: 600_000 },
};

const COLOURS = ['#d9622b', '#2b7bd9', '#2ba35b', '#a23bd1', '#c9a312'];

export function Chart({ lines, range, from: fixedFrom, to: fixedTo }: {
  lines: Line[]; range: string; from?: number; to?: number;
}) {
  const host = useRef<HTMLDivElement>(null);
  const [error, setError] = useState<unknown>(null);
  const key = JSON.stringify([lines, range, fixedFrom, fixedTo]);
  useEffect(() => {
    if (!host.current || lines.length === 0) return;
    const chosen = RANGES[range] ?? RANGES['1h'];
    const live = fixedTo === undefined;
    const to = fixedTo ?? Math.ceil(Date.now() / chosen.bucket) * chosen.bucket;
    const from = fixedFrom ?? to - chosen.span;
    const bucket = fixedFrom !== undefined && fixedTo !== undefined
      ? Math.max(1000, Math.ceil((to - from) / 1440 / 1000) * 1000)
      : chosen.bucket;
    let stopped = false;
    let plot: uPlot | null = null;
    let stop = () => {};
    let frame = 0;
    (async () => {
      const cut = await gql<{ events: { nodes: { id: string }[] } }>('{ events(first: 1) { nodes { id } } }');
      const asOf = cut.events.nodes[0]?.id ?? '0';
      const query = `query($from: DateTime!, $to: DateTime!, $b: Int!, $asOf: ID) { ${lines
        .map((l, i) => `s${i}: telemetry(deviceId: ${JSON.stringify(l.deviceId)}, service: ${JSON.stringify(l.service)},
          field: ${JSON.stringify(l.field)}, from: $from, to: $to, bucketSeconds: $b, asOf: $asOf) { start count sum }`)
        .join('\n')} }`;
      const data = await gql<Record<string, Bucket[]>>(query, {
        from: new Date(from).toISOString(), to: new Date(to).toISOString(), b: bucket / 1000, asOf,
      });
      if (stopped || !host.current) return;
      const series = lines.map((_, i) => new Series(from, bucket, data[`s${i}`], Number(asOf)));
      const columns = (): uPlot.AlignedData => [series[0].xs, ...series.map((s) => s.ys())];
      const dark = matchMedia('(prefers-color-scheme: dark)').matches || document.documentElement.dataset.theme === 'dark';
      const axis = { stroke: dark ? '#c8ccd4' : '#333', grid: { stroke: dark ? '#333a44' : '#e3e5e8' } };
      plot = new uPlot(
        {
          width: host.current.clientWidth || 600,
          height: 260,
          series: [{}, ...lines.map((l, i) => ({ label: l.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false }))],
          axes: [axis, axis],
          scales: { x: { time: true } },
        },
        columns(),
        host.current,
      );
      const resize = new ResizeObserver(() => plot?.setSize({ width: host.current?.clientWidth || 600, height: 260 }));
      resize.observe(host.current);
      if (!live) {
        stop = () => resize.disconnect();
        return;
      }
      const redraw = () => {
        if (!frame) frame = requestAnimationFrame(() => { frame = 0; plot?.setData(columns()); });
      };
      const tick = setInterval(() => { for (const s of series) s.advance(Date.now()); redraw(); }, bucket);
      const ids = [...new Set(lines.map((l) => l.deviceId))];
      let after = Number(asOf);
      const unsubscribe = subscribe<{ events: LogEvent }>(
        'subscription($f: EventFilter, $after: ID) { events(filter: $f, after: $after) { id deviceId service payload occurredAt receivedAt } }',
        () => ({ f: { deviceIds: ids }, after: String(after) }),
        {
          next: ({ events: e }) => {
            const id = Number(e.id);
            if (!(id > after)) return;
            after = id;
            const at = Date.parse(e.occurredAt ?? e.receivedAt);
            lines.forEach((l, i) => {
              if (l.deviceId !== e.deviceId || l.service !== e.service) return;
              const value = valueAt(e.payload, l.field);
              if (value !== null) series[i].add(id, at, value);
            });
            for (const s of series) s.advance(Date.now());
            redraw();
          },
          error: setError,
        },
      );
      stop = () => { unsubscribe(); clearInterval(tick); resize.disconnect(); };
    })().catch(setError);
    return () => {
      stopped = true;
      stop();
      cancelAnimationFrame(frame);
      plot?.destroy();
    };
  }, [key]);
  return (
    <figure class="chart">
      <div ref={host} role="img" aria-label={`Chart of ${lines.map((l) => l.label).join(', ')}`} />
      {error !== null && <ErrorNote error={error} />}
    </figure>
  );
}

import { describe, expect, it } from 'vitest';
import { EventLog, type LogEvent, type MissedPage, describeCatchUp, readMissed } from './eventlog';

const event = (id: number): LogEvent => ({
  id: String(id), deviceId: 'd', service: 's', payload: id, occurredAt: null, receivedAt: '2026-01-01T00:00:00Z',
});
const ids = (log: EventLog) => {
  const out: string[] = [];
  for (let i = 0; i < log.visible; i++) {
    const row = log.at(i);
    out.push(row?.kind === 'event' ? row.event.id : `[${row?.kind === 'marker' ? row.text : '?'}]`);
  }
  return out;
};

describe('EventLog', () => {
  it('keeps the newest rows first and drops what a replayed resume repeats', () => {
    const log = new EventLog(100);
    for (const id of [1, 2, 3]) expect(log.accept(event(id))).toBe(true);
    // A reconnect that re-sent an older `after` replays 2 and 3.
    expect(log.accept(event(2))).toBe(false);
    expect(log.accept(event(3))).toBe(false);
    expect(log.accept(event(4))).toBe(true);
    expect(ids(log)).toEqual(['4', '3', '2', '1']);
    expect(log.lastId).toBe(4);
  });

  it('is a ring: memory stays at its capacity at any rate', () => {
    const log = new EventLog(1000);
    for (let id = 1; id <= 100_000; id++) log.accept(event(id));
    expect(log.length).toBe(1000);
    expect(log.at(0)?.kind === 'event' && log.at(0)).toMatchObject({ event: { id: '100000' } });
    expect(log.at(999)).toMatchObject({ event: { id: '99001' } });
    expect(log.at(1000)).toBeUndefined();
  });

  it('marks where a resume ends and how many events it brought', () => {
    const log = new EventLog(100);
    log.accept(event(1));
    log.catchUp();
    expect(log.catchingUp).toBe(true);
    for (const id of [2, 3, 4]) log.accept(event(id));
    log.caughtUp({ count: 3, exact: true });
    log.accept(event(5));
    expect(log.catchingUp).toBe(false);
    expect(log.lastCatchUp?.missed).toEqual({ count: 3, exact: true });
    expect(ids(log)).toEqual(['5', '[Reconnected — caught up 3 events missed meanwhile]', '4', '3', '2', '1']);
    log.catchUp();
    log.caughtUp(null);
    expect(ids(log)[0]).toBe('[Reconnected — the events missed meanwhile are replayed above]');
  });

  it('holds the view still while paused and counts what arrived', () => {
    const log = new EventLog(100);
    for (const id of [1, 2]) log.accept(event(id));
    log.pause();
    for (const id of [3, 4, 5]) log.accept(event(id));
    expect(log.pending).toBe(3);
    expect(ids(log)).toEqual(['2', '1']);
    log.resume();
    expect(ids(log)).toEqual(['5', '4', '3', '2', '1']);
  });
});

/** A store of events `1..=newest` read as the server pages them: newest first, `size` to a page. */
function pages(newest: number, size: number, reads: { after: string | null; idsOnly: boolean }[] = []) {
  return async (after: string | null, idsOnly: boolean): Promise<MissedPage> => {
    reads.push({ after, idsOnly });
    const top = after === null ? newest : Number(after) - 1;
    const nodes = [];
    for (let id = top; id > Math.max(0, top - size); id--) nodes.push(idsOnly ? ({ id: String(id) } as LogEvent) : event(id));
    const bottom = top - nodes.length;
    return { nodes, pageInfo: { hasNextPage: bottom > 0, endCursor: nodes.length ? String(bottom + 1) : null } };
  };
}

describe('readMissed', () => {
  it('reads down to the last id seen, oldest first, and tells the newest id at once', async () => {
    const reads: { after: string | null; idsOnly: boolean }[] = [];
    const heard: number[] = [];
    const missed = await readMissed(pages(1_234, 500, reads), 100, 10_000, 100_000, (n) => heard.push(n));
    expect(missed.count).toBe(1_134);
    expect(missed.newest).toBe(1_234);
    expect(missed.events.map((e) => Number(e.id))).toEqual(Array.from({ length: 1_134 }, (_, i) => 101 + i));
    expect(heard).toEqual([1_234]);
    // Three pages, and no more once the last id seen is reached.
    expect(reads.map((r) => r.after)).toEqual([null, '735', '235']);
  });

  it('holds only what the log can show, counts the rest by id alone', async () => {
    const reads: { after: string | null; idsOnly: boolean }[] = [];
    const missed = await readMissed(pages(30_000, 500, reads), 0, 1_000, 100_000);
    expect(missed).toMatchObject({ count: 30_000, exact: true });
    expect(missed.events).toHaveLength(1_000);
    expect(missed.events[0].id).toBe('29001');
    expect(missed.events.at(-1)?.id).toBe('30000');
    expect(reads).toHaveLength(60);
    expect(reads.filter((r) => !r.idsOnly)).toHaveLength(2);
  });

  it('nothing missed: an empty answer, the newest id is the last one seen', async () => {
    const heard: number[] = [];
    expect(await readMissed(pages(40, 500), 40, 100, 1_000, (n) => heard.push(n))).toEqual({ events: [], count: 0, exact: true, newest: 40 });
    expect(await readMissed(pages(0, 500), 7, 100, 1_000, (n) => heard.push(n))).toEqual({ events: [], count: 0, exact: true, newest: 7 });
    expect(heard).toEqual([40, 7]);
  });

  it('stops counting at its bound and says the count is a floor', async () => {
    const reads: { after: string | null; idsOnly: boolean }[] = [];
    const missed = await readMissed(pages(1_000_000, 500, reads), 0, 100, 2_000);
    expect(missed).toMatchObject({ count: 2_000, exact: false, newest: 1_000_000 });
    expect(missed.events.at(-1)?.id).toBe('1000000');
    expect(reads).toHaveLength(5);
  });

  it('describes a catch-up in words', () => {
    expect(describeCatchUp({ count: 1, exact: true }, 10_000)).toBe('caught up 1 event missed meanwhile');
    expect(describeCatchUp({ count: 30_000, exact: true }, 10_000)).toBe('caught up 30,000 events missed meanwhile; the newest 10,000 are shown');
    expect(describeCatchUp({ count: 100_000, exact: false }, 10_000)).toBe('caught up more than 100,000 events missed meanwhile; the newest 10,000 are shown');
  });
});

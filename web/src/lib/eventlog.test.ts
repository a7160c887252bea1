import { describe, expect, it } from 'vitest';
import { EventLog, type LogEvent } from './eventlog';

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

  it('counts what a resume caught up and leaves a marker', () => {
    const log = new EventLog(100);
    log.accept(event(1));
    log.catchUp();
    for (const id of [2, 3, 3, 4]) log.accept(event(id));
    log.caughtUpMarker();
    log.accept(event(5));
    expect(ids(log)).toEqual(['5', '[Reconnected — caught up 3 events]', '4', '3', '2', '1']);
  });

  it('ends the catch-up at the newest id there was, however fast live events follow', () => {
    const log = new EventLog(100);
    log.accept(event(1));
    log.catchUp();
    log.accept(event(2));
    log.catchUpThrough(4);
    expect(log.catchingUp).toBe(true);
    for (const id of [3, 4, 5, 6]) log.accept(event(id));
    expect(log.catchingUp).toBe(false);
    expect(ids(log)).toEqual(['6', '5', '[Reconnected — caught up 3 events]', '4', '3', '2', '1']);
    expect(log.lastCatchUp?.count).toBe(3);
  });

  it('counts only the caught-up events when the newest id is learnt late', () => {
    const log = new EventLog(100);
    log.accept(event(1));
    log.catchUp();
    for (const id of [2, 3, 4, 5]) log.accept(event(id));
    log.catchUpThrough(3);
    expect(ids(log)[0]).toBe('[Reconnected — caught up 2 events]');
    // Nothing new since the outage: the marker says so at once.
    log.catchUp();
    log.catchUpThrough(5);
    expect(ids(log)[0]).toBe('[Reconnected — caught up 0 events]');
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

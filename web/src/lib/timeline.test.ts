import { describe, expect, it } from 'vitest';
import { type StatusChange, segments, shares } from './timeline';

const at = (minute: number) => new Date(Date.UTC(2026, 11, 3, 12, minute)).toISOString();
const t = (minute: number) => Date.parse(at(minute));
const change = (minute: number, status: StatusChange['status'], connectorId: string | null = null): StatusChange =>
  ({ status, connectorId, at: at(minute) });

describe('segments', () => {
  it('starts with the status the device had when the range began', () => {
    // Newest first, as the server sends it, with the change before `from`.
    const history = [change(50, 'OFFLINE', 'pi'), change(20, 'ONLINE', 'pi'), change(5, 'OFFLINE')];
    expect(segments(history, t(10), t(60))).toEqual([
      { status: 'OFFLINE', connectorId: null, from: t(10), to: t(20) },
      { status: 'ONLINE', connectorId: 'pi', from: t(20), to: t(50) },
      { status: 'OFFLINE', connectorId: 'pi', from: t(50), to: t(60) },
    ]);
  });

  it('leaves the time before anything is known unknown, never guessed', () => {
    expect(segments([change(30, 'ONLINE', 'pi')], t(10), t(60))).toEqual([
      { status: null, connectorId: null, from: t(10), to: t(30) },
      { status: 'ONLINE', connectorId: 'pi', from: t(30), to: t(60) },
    ]);
    expect(segments([], t(10), t(60))).toEqual([{ status: null, connectorId: null, from: t(10), to: t(60) }]);
  });

  it('ignores changes after the end of a fixed range', () => {
    const history = [change(70, 'DISCONNECTED'), change(5, 'ONLINE', 'pi')];
    expect(segments(history, t(10), t(60))).toEqual([{ status: 'ONLINE', connectorId: 'pi', from: t(10), to: t(60) }]);
  });

  it('covers the range with no gap or overlap, and shares add up', () => {
    const history = [change(55, 'ONLINE'), change(40, 'OFFLINE'), change(25, 'ONLINE'), change(0, 'OFFLINE')];
    const parts = segments(history, t(10), t(60));
    for (let i = 1; i < parts.length; i++) expect(parts[i].from).toBe(parts[i - 1].to);
    expect(parts[0].from).toBe(t(10));
    expect(parts.at(-1)!.to).toBe(t(60));
    expect(shares(parts)).toEqual(new Map([['OFFLINE', 60], ['ONLINE', 40]]));
  });
});

import { describe, expect, it } from 'vitest';
import { Series, valueAt } from './series';

const MIN = 60_000;
const T0 = Date.UTC(2026, 0, 1);

describe('Series', () => {
  it('extends telemetry with live events past the cut, each counted once', () => {
    // Buckets read with asOf = 10: events 1..10 are in them.
    const series = new Series(T0, MIN, [
      { start: '', count: 2, sum: 3 },
      { start: '', count: 0, sum: null },
      { start: '', count: 1, sum: 5 },
    ], 10);
    expect(series.ys()).toEqual([1.5, null, 5]);
    // Event 9 is below the cut (already counted): ignored. 11 counts once.
    expect(series.add(9, T0 + 10, 100)).toBe(false);
    expect(series.add(11, T0 + 2 * MIN + 1, 7)).toBe(true);
    expect(series.add(11, T0 + 2 * MIN + 1, 7)).toBe(false);
    expect(series.ys()).toEqual([1.5, null, 6]);
    // An event that happened in the past lands in its own bucket.
    expect(series.add(12, T0 + 30_000, 6)).toBe(true);
    expect(series.ys()).toEqual([3, null, 6]);
  });

  it('slides the window with time, new buckets empty (gaps, not zeros)', () => {
    const series = new Series(T0, MIN, [{ start: '', count: 1, sum: 1 }, { start: '', count: 1, sum: 2 }], 0);
    series.advance(T0 + 2 * MIN + 5);
    expect(series.xs).toEqual([(T0 + MIN) / 1000, (T0 + 2 * MIN) / 1000]);
    expect(series.ys()).toEqual([2, null]);
    expect(series.add(1, T0 + 2 * MIN + 6, 4)).toBe(true);
    expect(series.ys()).toEqual([2, 4]);
  });
});

describe('valueAt', () => {
  it('reads numbers and booleans at a dotted path, like the server', () => {
    expect(valueAt({ env: { t: 21.5 } }, 'env.t')).toBe(21.5);
    expect(valueAt({ on: true }, 'on')).toBe(1);
    expect(valueAt(3, '')).toBe(3);
    expect(valueAt({ t: '21' }, 't')).toBeNull();
    expect(valueAt({ t: [1] }, 't.0')).toBeNull();
    expect(valueAt(null, 'a')).toBeNull();
  });
});

// A chart's series: `telemetry` buckets for the chosen range, then extended
// by live events with no hole and no double count at the seam.
//
// The page takes a cut first (the newest event id), asks for
// `telemetry(asOf: cut)` and subscribes to `events(after: cut)`: an event
// counts in the buckets if its id is at most the cut, and through `add`
// otherwise — never both. Empty buckets stay null (drawn as gaps, never as
// zero).

export interface Bucket {
  start: string;
  count: number;
  sum: number | null;
}

/** The number at a dotted `field` of a payload, as the server reads it. */
export function valueAt(payload: unknown, field: string): number | null {
  let value: unknown = payload;
  if (field !== '') {
    for (const key of field.split('.')) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
      value = (value as Record<string, unknown>)[key];
    }
  }
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  return null;
}

export class Series {
  /** Bucket starts, in seconds (uPlot's x). */
  readonly xs: number[] = [];
  private sums: number[] = [];
  private counts: number[] = [];
  private lastId: number;

  /**
   * `from` and `bucketMs` in milliseconds; `asOf` is the cut the buckets
   * were read at.
   */
  constructor(
    private from: number,
    readonly bucketMs: number,
    buckets: Bucket[],
    asOf: number,
  ) {
    this.lastId = asOf;
    for (const [i, bucket] of buckets.entries()) {
      this.xs.push((from + i * bucketMs) / 1000);
      this.sums.push(bucket.sum ?? 0);
      this.counts.push(bucket.count);
    }
  }

  /** Averages per bucket; null where a bucket is empty. */
  ys(): (number | null)[] {
    return this.counts.map((count, i) => (count > 0 ? this.sums[i] / count : null));
  }

  /**
   * Counts a live event, once: ids at or below the cut (or already added)
   * are ignored. Events outside the window are ignored too.
   */
  add(id: number, at: number, value: number): boolean {
    if (!(id > this.lastId)) return false;
    this.lastId = id;
    const index = Math.floor((at - this.from) / this.bucketMs);
    if (index < 0 || index >= this.counts.length) return false;
    this.sums[index] += value;
    this.counts[index] += 1;
    return true;
  }

  /** Slides the window so that it ends after `now`: new empty buckets on the right, old ones dropped. */
  advance(now: number): void {
    while (this.from + this.counts.length * this.bucketMs <= now) {
      this.xs.push((this.from + this.counts.length * this.bucketMs) / 1000);
      this.sums.push(0);
      this.counts.push(0);
      this.xs.shift();
      this.sums.shift();
      this.counts.shift();
      this.from += this.bucketMs;
    }
  }
}

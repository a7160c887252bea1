// The event log's memory: a ring of the newest rows (events and markers),
// with duplicates dropped by id, so it stays bounded at any event rate and
// exact across reconnects.
//
// Events of one subscription arrive in id order, and anything a stream
// repeats (a replay of an older `after`) has an id at or below `lastId` and
// is dropped.
//
// After an outage the log does not let the socket replay what it missed:
// at 100 events/s five minutes are 30 000 WebSocket messages, and the
// browser's per-message work made that catch-up take 7 s. `readMissed`
// reads them over HTTP instead, 500 to a response, newest first, keeping
// only as many as the log holds and counting the rest by id; the stream
// then resumes after the newest of them.

export interface LogEvent {
  id: string;
  deviceId: string;
  service: string;
  payload: unknown;
  occurredAt: string | null;
  receivedAt: string;
}

export type Row =
  | { kind: 'event'; key: string; event: LogEvent }
  | { kind: 'marker'; key: string; text: string; tone: 'info' | 'warn' };

/** How many events a resume missed: exact, or at least that many. */
export interface MissedCount {
  count: number;
  exact: boolean;
}

const number = new Intl.NumberFormat('en');

/** "caught up 3 events missed meanwhile", "caught up more than 100,000 events missed meanwhile; the newest 10,000 are shown". */
export function describeCatchUp(missed: MissedCount | null, capacity: number): string {
  if (missed === null) return 'the events missed meanwhile are replayed above';
  const { count, exact } = missed;
  const words = `caught up ${exact ? '' : 'more than '}${number.format(count)} event${count === 1 && exact ? '' : 's'} missed meanwhile`;
  return count > capacity ? `${words}; the newest ${number.format(capacity)} are shown` : words;
}

export class EventLog {
  private readonly rows: (Row | undefined)[];
  private next = 0;
  private size = 0;
  private markers = 0;
  /** The highest event id taken in; the `after` of the next resume. */
  lastId = 0;
  /** Rows added since the view was paused. */
  pending = 0;
  paused = false;
  /** Whether a resume is being caught up. */
  catchingUp = false;
  /** The last resume that was caught up, and when. */
  lastCatchUp: { missed: MissedCount | null; at: number } | null = null;

  constructor(readonly capacity: number) {
    this.rows = new Array(capacity);
  }

  get length(): number {
    return this.size;
  }

  /** Takes an event in; false (and nothing changes) for a duplicate. */
  accept(event: LogEvent): boolean {
    const id = Number(event.id);
    if (!(id > this.lastId)) return false;
    this.lastId = id;
    this.push({ kind: 'event', key: event.id, event });
    return true;
  }

  mark(text: string, tone: 'info' | 'warn' = 'info'): void {
    this.markers += 1;
    this.push({ kind: 'marker', key: `m${this.markers}`, text, tone });
  }

  /** A resume has begun: the page says so until `caughtUp`. */
  catchUp(): void {
    this.catchingUp = true;
  }

  /**
   * The resume has taken in what was missed (null: the live stream replays
   * it, uncounted); a marker says so where it ends.
   */
  caughtUp(missed: MissedCount | null): void {
    this.catchingUp = false;
    this.lastCatchUp = { missed, at: Date.now() };
    this.mark(`Reconnected — ${describeCatchUp(missed, this.capacity)}`);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pending = 0;
  }

  /**
   * The `index`-th row of the view, newest first. While paused the view
   * stays where it was: rows added since sit above it, counted in `pending`.
   */
  at(index: number): Row | undefined {
    const offset = this.paused ? this.pending : 0;
    const i = index + offset;
    if (i < 0 || i >= this.size) return undefined;
    return this.rows[(this.next - 1 - i + this.capacity * 2) % this.capacity];
  }

  /** Rows the view can show. */
  get visible(): number {
    return this.paused ? Math.max(0, this.size - this.pending) : this.size;
  }

  private push(row: Row): void {
    this.rows[this.next] = row;
    this.next = (this.next + 1) % this.capacity;
    this.size = Math.min(this.capacity, this.size + 1);
    if (this.paused) this.pending = Math.min(this.capacity, this.pending + 1);
  }
}

/** One page of a connection, newest first, as `readMissed` reads it. */
export interface MissedPage {
  nodes: LogEvent[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

/**
 * Reads a page of events, newest first, after the Relay cursor `after`
 * (null: from the newest); with `idsOnly`, nodes need only their `id`.
 */
export type PageReader = (after: string | null, idsOnly: boolean) => Promise<MissedPage>;

export interface Missed extends MissedCount {
  /** The newest `keep` of them, oldest first (as `accept` takes them). */
  events: LogEvent[];
  /** The newest id there was when the first page was read (`lastId` when none). */
  newest: number;
}

/**
 * The events newer than `lastId`, read page after page from the newest
 * down to `lastId`. `onNewest` hears the newest id as soon as the first
 * page is in, so a stream can resume after it while older pages are read.
 * Once `keep` events are held, further pages are read for their ids alone:
 * the count stays exact, and memory stays at what the log can show. After
 * `countUpTo` events it stops (`exact: false`): a page away for a day at
 * 100 events/s would otherwise read 17 000 pages to count what it cannot
 * show.
 */
export async function readMissed(
  readPage: PageReader,
  lastId: number,
  keep: number,
  countUpTo: number,
  onNewest: (newest: number) => void = () => undefined,
): Promise<Missed> {
  const held: LogEvent[] = [];
  let count = 0;
  let newest: number | null = null;
  let after: string | null = null;
  for (;;) {
    const page = await readPage(after, held.length >= keep);
    for (const node of page.nodes) {
      const id = Number(node.id);
      if (newest === null) {
        newest = Math.max(id, lastId);
        onNewest(newest);
      }
      if (!(id > lastId)) return done(true);
      if (count >= countUpTo) return done(false);
      count += 1;
      if (held.length < keep) held.push(node);
    }
    if (newest === null) {
      newest = lastId;
      onNewest(lastId);
    }
    if (!page.pageInfo.hasNextPage || page.pageInfo.endCursor === null) return done(true);
    after = page.pageInfo.endCursor;
  }

  function done(exact: boolean): Missed {
    return { events: held.reverse(), count, exact, newest: newest ?? lastId };
  }
}

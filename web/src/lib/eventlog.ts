// The event log's memory: a ring of the newest rows (events and markers),
// with duplicates dropped by id, so it stays bounded at any event rate and
// exact across reconnects.
//
// Events of one subscription arrive in id order; after a reconnect the
// stream resumes with `after: lastId`, and anything it repeats (a replay of
// an older `after`) has an id at or below `lastId` and is dropped.

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
  /** Event ids taken in since `catchUp()` was called (null: not catching up). */
  private resumed: number[] | null = null;
  /** The newest id that existed when the resume began, once known. */
  private through: number | null = null;
  /** The last resume that was caught up: how many events, and when. */
  lastCatchUp: { count: number; at: number } | null = null;

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
    if (this.resumed !== null) {
      this.resumed.push(id);
      if (this.through !== null && id >= this.through) this.caughtUpMarker();
    }
    return true;
  }

  mark(text: string, tone: 'info' | 'warn' = 'info'): void {
    this.markers += 1;
    this.push({ kind: 'marker', key: `m${this.markers}`, text, tone });
  }

  /** Whether a resume is being caught up. */
  get catchingUp(): boolean {
    return this.resumed !== null;
  }

  /** Starts counting the events a resume brings. */
  catchUp(): void {
    this.resumed = [];
    this.through = null;
  }

  /**
   * The newest event id there was when the resume began: the catch-up ends
   * with it (now, if it is already in). Events are live after it, however
   * fast they keep coming.
   */
  catchUpThrough(newest: number): void {
    if (this.resumed === null) return;
    this.through = newest;
    if (this.lastId >= newest) this.caughtUpMarker();
  }

  /**
   * Stops counting and marks how many events the resume brought: those up
   * to `catchUpThrough`'s id when it is known, else all taken in since.
   */
  caughtUpMarker(): void {
    if (this.resumed === null) return;
    const through = this.through ?? Infinity;
    const n = this.resumed.filter((id) => id <= through).length;
    this.resumed = null;
    this.through = null;
    this.lastCatchUp = { count: n, at: Date.now() };
    this.mark(`Reconnected — caught up ${n} event${n === 1 ? '' : 's'}`);
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

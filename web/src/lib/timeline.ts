// A device's status over a time range, as segments for the status timeline,
// from its `statusHistory` (newest first, with the change before the range).

export interface StatusChange {
  status: 'ONLINE' | 'OFFLINE' | 'DISCONNECTED';
  connectorId: string | null;
  at: string;
}

export interface Segment {
  /** null: before the first change the server knows of. */
  status: StatusChange['status'] | null;
  connectorId: string | null;
  from: number;
  to: number;
}

/** Consecutive segments covering [from, to], oldest first. */
export function segments(history: StatusChange[], from: number, to: number): Segment[] {
  const oldestFirst = [...history].reverse();
  const result: Segment[] = [];
  let status: Segment['status'] = null;
  let connectorId: string | null = null;
  let start = from;
  for (const change of oldestFirst) {
    const at = Date.parse(change.at);
    if (at > start && at <= to) {
      result.push({ status, connectorId, from: start, to: at });
      start = at;
    }
    if (at <= to) {
      status = change.status;
      connectorId = change.connectorId;
    }
  }
  if (start < to) result.push({ status, connectorId, from: start, to });
  return result;
}

/** How much of the range each status took, in percent ('no record' before the first change). */
export function shares(parts: Segment[]): Map<string, number> {
  const total = parts.reduce((sum, s) => sum + (s.to - s.from), 0);
  const byStatus = new Map<string, number>();
  for (const part of parts) {
    const key = part.status ?? 'no record';
    byStatus.set(key, (byStatus.get(key) ?? 0) + (part.to - part.from));
  }
  for (const [key, ms] of byStatus) byStatus.set(key, total ? (ms / total) * 100 : 0);
  return byStatus;
}

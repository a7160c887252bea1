import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { retryDelay, waitToRetry } from './live';

describe('reconnecting', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('backs off from half a second to at most ten, with jitter', () => {
    expect(retryDelay(0, () => 0)).toBe(250);
    expect(retryDelay(0, () => 1)).toBe(500);
    expect(retryDelay(3, () => 1)).toBe(4_000);
    expect(retryDelay(30, () => 1)).toBe(10_000);
    expect(retryDelay(30, () => 0)).toBe(5_000);
  });

  it('retries at once when the network comes back or the tab is looked at', async () => {
    const win = new EventTarget();
    const doc = Object.assign(new EventTarget(), { visibilityState: 'hidden' });
    let woke = false;
    void waitToRetry(30, win, doc).then(() => { woke = true; });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(woke).toBe(false);
    win.dispatchEvent(new Event('online'));
    await vi.advanceTimersByTimeAsync(0);
    expect(woke).toBe(true);

    woke = false;
    void waitToRetry(30, win, doc).then(() => { woke = true; });
    doc.dispatchEvent(new Event('visibilitychange'));
    await vi.advanceTimersByTimeAsync(0);
    expect(woke).toBe(false); // still hidden
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    await vi.advanceTimersByTimeAsync(0);
    expect(woke).toBe(true);
  });

  it('otherwise waits out the backoff', async () => {
    const win = new EventTarget();
    const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    let woke = false;
    void waitToRetry(0, win, doc).then(() => { woke = true; });
    await vi.advanceTimersByTimeAsync(501);
    expect(woke).toBe(true);
  });
});

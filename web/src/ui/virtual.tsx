// Virtualised rows for real tables: only the rows in view (plus a margin)
// are in the DOM, between two spacer rows, so 10 000 devices or a fast
// event log cost what one screen costs.

import type { RefObject } from 'preact';
import { useEffect, useState } from 'preact/hooks';

export const ROW_HEIGHT = 36;
const MARGIN = 10;

export function useVisibleRange(scroller: RefObject<HTMLElement | null>, count: number): [number, number] {
  const [view, setView] = useState({ top: 0, height: 600 });
  useEffect(() => {
    const element = scroller.current;
    if (!element) return;
    let frame = 0;
    const measure = () => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => setView({ top: element.scrollTop, height: element.clientHeight }));
    };
    measure();
    element.addEventListener('scroll', measure, { passive: true });
    const resize = new ResizeObserver(measure);
    resize.observe(element);
    return () => {
      element.removeEventListener('scroll', measure);
      resize.disconnect();
      cancelAnimationFrame(frame);
    };
  }, [scroller]);
  const start = Math.max(0, Math.floor(view.top / ROW_HEIGHT) - MARGIN);
  const end = Math.min(count, Math.ceil((view.top + view.height) / ROW_HEIGHT) + MARGIN);
  return [start, end];
}

export function Spacer({ rows, columns }: { rows: number; columns: number }) {
  if (rows <= 0) return null;
  return (
    <tr aria-hidden="true" class="spacer" style={{ height: `${rows * ROW_HEIGHT}px` }}>
      <td colSpan={columns} />
    </tr>
  );
}

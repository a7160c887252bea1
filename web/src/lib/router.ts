// Client-side routes on the History API: the server answers every route
// with index.html, so a deep link or a reload lands on the same page.

import { signal } from '@preact/signals';

export const route = signal(new URL(location.href));

export function navigate(to: string, replace = false): void {
  const url = new URL(to, location.href);
  if (url.href === location.href) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route.value = url;
}

/** Sets query parameters of the current route (a chart's range, filters). */
export function setParams(params: Record<string, string | null>): void {
  const url = new URL(location.href);
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === '') url.searchParams.delete(key);
    else url.searchParams.set(key, value);
  }
  navigate(url.pathname + url.search, true);
}

addEventListener('popstate', () => {
  route.value = new URL(location.href);
});

/** Same-origin links navigate without a reload. */
addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const link = (event.target as Element | null)?.closest?.('a');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/graphql')) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

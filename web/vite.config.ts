// The dashboard's build. `server/build.rs` runs `vite build --outDir
// $OUT_DIR/web`; `npm run dev` serves it with hot reload and sends the API
// to a `ferrite serve` on :8080.
import { defineConfig } from 'vitest/config';

const api = 'http://127.0.0.1:8080';

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    target: 'es2022',
    // No data: URLs and no inline script: the page's CSP allows neither.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    // GraphiQL is one 1 MB chunk (326 KB gzipped), loaded only at /graphql.
    chunkSizeWarningLimit: 1100,
    rolldownOptions: {
      // Two pages: the dashboard, and GraphiQL (served for a browser's
      // GET /graphql; React, loaded only there).
      input: { main: 'index.html', graphiql: 'graphiql.html' },
      onwarn(warning, warn) {
        // GraphiQL's dependencies mark React server-component boundaries
        // ("use client"), which mean nothing in a client-only bundle.
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        warn(warning);
      },
    },
  },
  server: {
    proxy: {
      '/graphql': { target: api, ws: true },
      '/auth': api,
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
  },
});

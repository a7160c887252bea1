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

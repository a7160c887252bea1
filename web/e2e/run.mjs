// Runs the browser tests (node:test, one process per file, in parallel).
// Needs the debug `ferrite` and `ferrite-connector` binaries (cargo build)
// and Chromium at /usr/bin/chromium (scripts/test.sh installs both).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here).filter((f) => f.endsWith('.test.mjs')).map((f) => join(here, f));
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);

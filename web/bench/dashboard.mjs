// The dashboard's performance, measured in Debian's headless Chromium
// against a release `ferrite` on loopback (a benchmark, not a test: it
// prints figures and asserts nothing). docs/PERFORMANCE.md, "Dashboard",
// holds the results and the machine.
//
//   cargo build --release -p ferrite-server -p ferrite-connector
//   node web/bench/dashboard.mjs                  # the full run (about 40 minutes)
//   node web/bench/dashboard.mjs --heap-minutes 2 --offline-minutes 1   # a short one
//   node web/bench/dashboard.mjs --phases 2,3       # some of the measurements
//   node web/bench/dashboard.mjs --phases 5 --profile   # and where the page's catch-up time goes
//
// What it measures (the targets of issue #13):
//   1. initial JS of the dashboard, gzipped, as served;
//   2. the first chart of 1 440 buckets (24 h of one reading a minute):
//      navigation start to the plotted canvas;
//   3. 10 000 devices: navigation start to the list, then a search typed
//      to the next painted frame;
//   4. frames per second of a live chart and of the event log while
//      1 000 events/s are published, and the longest frame;
//   5. the event log offline for N minutes while 100 events/s are
//      published: from the network coming back to "caught up", and whether
//      every event is there exactly once;
//   6. JS heap (after a forced GC) over N minutes of live tail at
//      1 000 events/s.

import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { gzipSync } from 'node:zlib';
import { ADMIN_PASSWORD, Server, browser, eventually, signIn, watchedPage } from '../e2e/harness.mjs';

process.env.FERRITE_E2E_PROFILE ??= 'release';
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const HEAP_MINUTES = option('heap-minutes', 30);
const OFFLINE_MINUTES = option('offline-minutes', 5);
const FPS_SECONDS = option('fps-seconds', 20);
const PROFILE = args.includes('--profile');
// --phases 3,4: run only those measurements (numbered as above).
const PHASES = new Set((args.includes('--phases') ? args[args.indexOf('--phases') + 1] : '1,2,3,4,5,6').split(',').map(Number));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const results = [];
const report = (what, value, target) => {
  results.push({ what, value, target });
  console.log(`${what}: ${value}${target ? `   (target ${target})` : ''}`);
};

const server = await Server.start();
const admin = await server.login('admin', ADMIN_PASSWORD);
const key = await server.apiKey(admin, 'WRITE');

/** Registers devices over HTTP, 100 a request (aliases). */
async function registerDevices(prefix, count) {
  const ids = [];
  for (let start = 0; start < count; start += 100) {
    const n = Math.min(100, count - start);
    const inputs = Array.from({ length: n }, (_, i) => ({
      externalId: `${prefix}-${start + i}`, name: `${prefix} ${String(start + i).padStart(5, '0')}`,
      type: 'sensor', location: `room-${(start + i) % 50}`,
    }));
    const variables = Object.fromEntries(inputs.map((input, i) => [`i${i}`, input]));
    const declared = inputs.map((_, i) => `$i${i}: RegisterDeviceInput!`).join(', ');
    const fields = inputs.map((_, i) => `d${i}: registerDevice(input: $i${i}) { id }`).join('\n');
    const data = await server.gql(key, `mutation(${declared}) { ${fields} }`, variables);
    for (let i = 0; i < n; i++) ids.push(data[`d${i}`].id);
  }
  return ids;
}

/** Publishes `events` (EventInput objects) in requests of 500. */
async function publish(events) {
  let last = 0;
  for (let i = 0; i < events.length; i += 500) {
    const data = await server.gql(key, 'mutation($e: [EventInput!]!) { publishEvents(inputs: $e) { id } }', { e: events.slice(i, i + 500) });
    last = Number(data.publishEvents.at(-1).id);
  }
  return last;
}

/** Publishes `rate` events a second to `deviceId` until stopped; counts them. */
function publisher(deviceId, rate) {
  const perTick = Math.max(1, Math.round(rate / 10));
  const state = { published: 0, lastId: 0, stopped: false, done: null };
  state.done = (async () => {
    let next = Date.now();
    let value = 0;
    while (!state.stopped && !server.stopping) {
      const batch = Array.from({ length: perTick }, () => ({ deviceId, service: 'load', payload: { v: Math.sin(value++ / 50) * 10 } }));
      state.lastId = await publish(batch);
      state.published += perTick;
      next += 100;
      await sleep(Math.max(0, next - Date.now()));
    }
  })().catch((error) => {
    if (!server.stopping) console.error('publisher failed:', error);
  });
  state.stop = async () => {
    state.stopped = true;
    await state.done;
    return state;
  };
  return state;
}

/**
 * A TCP relay between the browser and the server that can cut the browser
 * off: `cut()` drops every connection and refuses new ones (what a network
 * outage does to the page), `restore()` lets them through again.
 */
class Link {
  constructor(port) {
    this.pairs = new Set();
    this.down = false;
    this.relay = createServer((client) => {
      if (this.down) return client.destroy();
      const upstream = connect(port, '127.0.0.1');
      const pair = [client, upstream];
      this.pairs.add(pair);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.pipe(upstream).on('error', close).on('close', close);
      upstream.pipe(client).on('error', close).on('close', close);
    });
  }

  async open() {
    await new Promise((done) => this.relay.listen(0, '127.0.0.1', done));
    this.origin = `http://127.0.0.1:${this.relay.address().port}`;
    return this;
  }

  cut() {
    this.down = true;
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  restore() {
    this.down = false;
  }
}

/**
 * Records, in the page, each "Back online …: caught up N events" line when
 * it is drawn (the events page shows it when a resume has caught up).
 */
function watchMarkers(page) {
  return page.evaluate(() => {
    let last = '';
    window.markers = [];
    const look = () => {
      const text = document.querySelector('.catch-up')?.textContent.trim() ?? '';
      if (text && text !== last) window.markers.push({ text, at: Date.now() });
      last = text;
    };
    new MutationObserver(look).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
}

/** The marker after `count` earlier ones, once drawn. */
function caughtUp(page, count) {
  return eventually('the caught-up marker', 120_000, () => page.evaluate((n) => window.markers[n], count));
}

/** CPU seconds (user + system) process `pid` has used so far. */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
}

/** Prints the functions a CPU profile spent most of its own time in. */
function summarise(profile) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
  for (const id of profile.samples) {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const name = `${functionName || '(anonymous)'} ${url.split('/').pop()}:${lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + interval);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  console.log(`  page CPU profile of the catch-up: ${(total / 1000).toFixed(0)} ms sampled; most self time:`);
  for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(`    ${(us / 1000).toFixed(0).padStart(6)} ms  ${((us / total) * 100).toFixed(1).padStart(5)} %  ${name}`);
  }
}

/** Frames per second and the longest frame over `seconds`, in the page. */
function frames(page, seconds) {
  return page.evaluate((ms) => new Promise((done) => {
    let count = 0;
    let longest = 0;
    const start = performance.now();
    let previous = start;
    const frame = (now) => {
      count += 1;
      longest = Math.max(longest, now - previous);
      previous = now;
      if (now - start < ms) requestAnimationFrame(frame);
      else done({ fps: (count * 1000) / (now - start), longest });
    };
    requestAnimationFrame(frame);
  }), seconds * 1000);
}

async function heap(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  const { usedSize } = await cdp.send('Runtime.getHeapUsage');
  return usedSize;
}

const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;

// 1. Initial JS, as the server sends it.
async function initialJs() {
  const html = await (await fetch(`${server.origin}/`)).text();
  const scripts = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+\.js)"/g)].map((m) => m[1]);
  let gzipped = 0;
  for (const path of scripts) gzipped += gzipSync(Buffer.from(await (await fetch(`${server.origin}${path}`)).arrayBuffer()), { level: 9 }).length;
  report('initial JS (gzipped)', `${(gzipped / 1000).toFixed(1)} KB in ${scripts.length} files`, '≤ 60 KB');
}

// 2. The first chart of 1 440 buckets: one reading a minute for 24 h.
async function firstChart({ page }) {
  const [chartDevice] = await registerDevices('chart', 1);
  const now = Date.now();
  await publish(Array.from({ length: 1440 }, (_, i) => ({
    deviceId: chartDevice, service: 'load', occurredAt: new Date(now - (1440 - i) * 60_000 + 1000).toISOString(),
    payload: { v: Math.round(Math.sin(i / 60) * 1000) / 10 },
  })));
  const chartTimes = [];
  for (let run = 0; run < 5; run++) {
    await page.goto(`${server.origin}/devices/${chartDevice}?range=24h&lines=load:v`);
    await page.locator('.uplot canvas').waitFor();
    chartTimes.push(await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done(performance.now())))));
  }
  chartTimes.sort((a, b) => a - b);
  report('first chart of 1 440 buckets (navigation → drawn), median of 5', `${Math.round(chartTimes[2])} ms (min ${Math.round(chartTimes[0])}, max ${Math.round(chartTimes[4])})`, '≤ 1 000 ms');
}

// 3. 10 000 devices.
async function manyDevices({ page }) {
  await registerDevices('bench', 10_000);
  const total = (await server.gql(admin, '{ devices { totalCount } }')).devices.totalCount;
  const firstRows = [];
  const listTimes = [];
  const filterTimes = [];
  for (let run = 0; run < 3; run++) {
    await page.goto(`${server.origin}/devices`);
    await page.getByRole('table', { name: 'Devices' }).locator('tbody a').first().waitFor();
    firstRows.push(await page.evaluate(() => performance.now()));
    await page.getByText(`${total} devices`).waitFor({ timeout: 60_000 });
    listTimes.push(await page.evaluate(() => performance.now()));
    for (const needle of ['bench 0999', 'room-7', '']) {
      filterTimes.push(await page.evaluate((text) => new Promise((done) => {
        const input = document.querySelector('input[type=search]');
        const start = performance.now();
        input.value = text;
        input.dispatchEvent(new Event('input', { bubbles: true }));
        requestAnimationFrame(() => setTimeout(() => done(performance.now() - start), 0));
      }), needle));
    }
  }
  for (const list of [firstRows, listTimes, filterTimes]) list.sort((a, b) => a - b);
  report(`${total} devices: navigation → first rows drawn / all listed, median of 3`, `${Math.round(firstRows[1])} / ${Math.round(listTimes[1])} ms`, '');
  report(`${total} devices: search typed → painted, median / worst of 9`, `${Math.round(filterTimes[4])} / ${Math.round(filterTimes[8])} ms`, '≤ 200 ms');
}

// 4. Frames per second at 1 000 events/s.
async function framesPerSecond({ page, liveDevice }) {
  const load = publisher(liveDevice, 1000);
  await page.goto(`${server.origin}/devices/${liveDevice}?range=1h&lines=load:v`);
  await page.locator('.uplot canvas').waitFor();
  await sleep(2000);
  const chartFps = await frames(page, FPS_SECONDS);
  report('live chart at 1 000 events/s: frames/s, longest frame', `${chartFps.fps.toFixed(1)} fps, ${Math.round(chartFps.longest)} ms`, '≥ 50 fps');
  await page.goto(`${server.origin}/events`);
  await page.getByRole('table', { name: 'Events' }).getByRole('cell', { name: 'load' }).first().waitFor();
  await sleep(2000);
  const logFps = await frames(page, FPS_SECONDS);
  report('event log at 1 000 events/s: frames/s, longest frame', `${logFps.fps.toFixed(1)} fps, ${Math.round(logFps.longest)} ms`, '≥ 50 fps');
  await load.stop();
}

// 5. Offline with 100 events/s published meanwhile, the page behind a
// relay it is cut off by. (Chromium's offline emulation alone does not
// close an open WebSocket, so it is used only for the browser's
// online/offline events.)
async function outages({ chromium, liveDevice }) {
  const link = await new Link(server.port).open();
  const relayed = await chromium.newContext({ viewport: { width: 1280, height: 860 } });
  const away = await watchedPage(relayed, link);
  await signIn(away, link);
  await away.getByRole('heading', { name: 'Devices' }).waitFor();
  await away.goto(`${link.origin}/events?device=${liveDevice}`);
  await away.getByRole('table', { name: 'Events' }).getByRole('cell', { name: 'load' }).first().waitFor();
  await watchMarkers(away);
  const slow = publisher(liveDevice, 100);
  /** Cuts the page off for `ms`, with or without the browser noticing, and times the catch-up. */
  const outage = async (ms, browserNotices, earlierMarkers) => {
    link.cut();
    if (browserNotices) await relayed.setOffline(true);
    await away.getByRole('status', { name: /Reconnecting/ }).waitFor({ timeout: 60_000 });
    const before = slow.published;
    await sleep(ms);
    const during = slow.published - before;
    // --profile: a CPU profile of the page's catch-up, for Chromium's
    // DevTools (target/dashboard-catch-up.cpuprofile).
    const profiler = PROFILE && earlierMarkers === 0 ? await relayed.newCDPSession(away) : null;
    await profiler?.send('Profiler.enable');
    await profiler?.send('Profiler.start');
    const serverBefore = cpuSeconds(server.child.pid);
    link.restore();
    const back = Date.now();
    if (browserNotices) await relayed.setOffline(false);
    const marker = await caughtUp(away, earlierMarkers).catch(async (error) => {
      await away.screenshot({ path: 'target/dashboard-bench-outage.png' });
      throw error;
    });
    if (profiler) {
      const { profile } = await profiler.send('Profiler.stop');
      writeFileSync('target/dashboard-catch-up.cpuprofile', JSON.stringify(profile));
      summarise(profile);
    }
    const serverCpu = cpuSeconds(server.child.pid) - serverBefore;
    return { seconds: (marker.at - back) / 1000, marker: marker.text, during, serverCpu };
  };
  const noticed = await outage(OFFLINE_MINUTES * 60_000, true, 0);
  const unnoticed = await outage(30_000, false, 1);
  const final = await slow.stop();
  await sleep(1500);
  // Exactly once: the newest rows' ids, read from the page, are consecutive
  // and end at the last one published.
  const ids = await away.evaluate(() => [...document.querySelectorAll('table[aria-label="Events"] tbody tr td:first-child')]
    .map((td) => Number(td.textContent)).filter((n) => n > 0));
  const consecutive = ids.every((id, i) => i === 0 || ids[i - 1] - id === 1);
  report(`offline ${OFFLINE_MINUTES} min at 100 events/s (browser offline, then online): back → caught up`,
    `${noticed.seconds.toFixed(1)} s (server CPU meanwhile ${noticed.serverCpu.toFixed(1)} s); "${noticed.marker}" (${noticed.during} published while away)`, '≤ 3 s, exact');
  report('the same for 30 s without the browser noticing (a server-side outage): back → caught up',
    `${unnoticed.seconds.toFixed(1)} s; "${unnoticed.marker}" (${unnoticed.during} published while away)`, '');
  report('after both: newest id shown / last published; visible rows consecutive', `${ids[0]} / ${final.lastId}; ${consecutive}`, 'equal; true');
  if (away.problems.length) console.log('page problems (relayed):', away.problems.slice(0, 5));
  await relayed.close();
  link.relay.close();
}

// 6. JS heap over a long live tail of the event log at 1 000 events/s
// (last: it is not sensitive to what else the machine does).
async function heapOverTime({ context, page, liveDevice }) {
  const tail = publisher(liveDevice, 1000);
  await page.goto(`${server.origin}/events`);
  await page.getByRole('table', { name: 'Events' }).getByRole('cell', { name: 'load' }).first().waitFor();
  const cdp = await context.newCDPSession(page);
  await sleep(30_000); // the ring (10 000 rows) fills in 10 s
  const samples = [await heap(cdp)];
  for (let minute = 1; minute <= HEAP_MINUTES; minute++) {
    await sleep(60_000);
    samples.push(await heap(cdp));
    console.log(`  heap after ${minute} min: ${mb(samples.at(-1))}`);
  }
  const [low, high] = [Math.min(...samples), Math.max(...samples)];
  report(`JS heap over ${HEAP_MINUTES} min of live tail at 1 000 events/s (after GC)`,
    `${mb(samples[0])} → ${mb(samples.at(-1))} (range ${mb(low)}–${mb(high)}, ${(((high - low) / samples[0]) * 100).toFixed(1)} % of the first)`, '±10 %');
  const published = (await tail.stop()).published;
  console.log(`  published ${published} events meanwhile`);
}

const MEASUREMENTS = [initialJs, firstChart, manyDevices, framesPerSecond, outages, heapOverTime];

const chromium = await browser();
try {
  const context = await chromium.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await watchedPage(context, server);
  await signIn(page, server);
  await page.getByRole('heading', { name: 'Devices' }).waitFor();
  const [liveDevice] = await registerDevices('live', 1);
  await publish([{ deviceId: liveDevice, service: 'load', payload: { v: 0 } }]);
  for (const [i, measure] of MEASUREMENTS.entries()) {
    if (PHASES.has(i + 1)) await measure({ chromium, context, page, liveDevice });
  }
  if (page.problems.length) console.log('page problems:', page.problems.slice(0, 5));
  await context.close();
} catch (error) {
  console.error('benchmark failed:', error);
  process.exitCode = 1;
} finally {
  server.stopping = true;
  await chromium.close();
  await server.cleanup();
}

console.log('\n| measure | result | target |\n|---|---|---|');
for (const { what, value, target } of results) console.log(`| ${what} | ${value} | ${target} |`);

// The status page in a real headless browser (Debian's chromium driven by
// playwright-core): it loads without console errors, its rates update while
// daq-sim sends, the heatmaps draw, and a screenshot is kept.
//
//   node page_test.mjs --daqd DAQD --sim DAQ_SIM --modules DIR/node_modules --out DIR
//
// Exit status: 0 passed, 1 failed, 77 skipped (no chromium or playwright-core).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const CHROMIUM = args.chromium || '/usr/bin/chromium';
const SKIP = 77;

function skip(why) {
  console.log(`SKIPPED: ${why}`);
  process.exit(SKIP);
}

if (!fs.existsSync(CHROMIUM)) skip(`${CHROMIUM} not found (Debian package 'chromium')`);
let chromium;
try {
  const require = createRequire(path.join(args.modules, 'noop.js'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  skip(`playwright-core is not installed in ${args.modules} (npm install --prefix ${path.dirname(args.modules)} playwright-core): ${e.message}`);
}

const freeTcp = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const freeUdp = () => new Promise((resolve) => {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const failures = [];
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'daqd-page-'));
fs.mkdirSync(args.out, { recursive: true });
const httpPort = await freeTcp();
const udpPort = await freeUdp();
const base = `http://127.0.0.1:${httpPort}`;

const daqdLog = fs.openSync(path.join(scratch, 'daqd.log'), 'w');
const daqd = spawn(args.daqd, ['--listen', `127.0.0.1:${udpPort}`, '--http', `127.0.0.1:${httpPort}`,
  '--output', path.join(scratch, 'runs')], { stdio: ['ignore', daqdLog, daqdLog] });
let sim = null;
let browser = null;

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  if (sim && sim.exitCode === null) sim.kill('SIGTERM');
  if (daqd.exitCode === null) {
    daqd.kill('SIGTERM');
    for (let i = 0; i < 300 && daqd.exitCode === null; i++) await sleep(100);
  }
  check(daqd.exitCode === 0, `daqd stopped cleanly on SIGTERM (exit ${daqd.exitCode})`);
  if (!process.env.DAQD_KEEP_TEST_FILES) fs.rmSync(scratch, { recursive: true, force: true });
}

try {
  // daqd up?
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    try { up = (await fetch(`${base}/api/v1/status`)).ok; } catch { await sleep(100); }
  }
  if (!up) throw new Error(`daqd did not come up:\n${fs.readFileSync(path.join(scratch, 'daqd.log'), 'utf8')}`);

  // Traffic for the whole test: 3 units of 4096 channels, ~12 s.
  sim = spawn(args.sim, ['--target', `127.0.0.1:${udpPort}`, '--units', '3', '--channels', '4096',
    '--duration', '25', '--rate', '30', '--quiet'], { stdio: 'ignore' });

  // A fresh profile (--user-data-dir) per run: playwright takes it as launchPersistentContext's directory.
  browser = await chromium.launchPersistentContext(path.join(scratch, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = browser.pages()[0] || await browser.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  // A request the page itself gave up on (a reload cancels the polls in flight) is not an error.
  page.on('requestfailed', (r) => {
    if (!/ERR_ABORTED/.test(r.failure()?.errorText || '')) consoleErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });

  await page.goto(base + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, { timeout: 15000 });

  // Rates update: the packet total read twice, 2.5 s apart.
  await page.waitForFunction(() => document.querySelectorAll('#units-table tbody tr').length >= 3, null, { timeout: 15000 });
  const read = () => page.$eval('#total-packets', (e) => Number(e.textContent.replace(/,/g, '')));
  const first = await read();
  await sleep(2500);
  const second = await read();
  check(first > 0 && second > first, `packet total grows while daq-sim sends (${first} then ${second})`);
  const pps = await page.$eval('#total-pps', (e) => e.textContent);
  check(pps !== '–' && pps !== '0', `packets/s shown (${pps})`);
  // Round axis ticks: equal steps of 1, 2, 2.5 or 5 × 10^k, from 0.
  for (const which of ['ticks0', 'ticks1']) {
    const ticks = await page.$eval('#rates-chart', (c, w) => c.dataset[w] || '', which);
    const mult = { k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
    const vals = ticks.split('|').map((t) => { const [n, p] = t.trim().split(' '); return Number(n) * (p ? mult[p] : 1); });
    const step = vals[1] - vals[0];
    const mant = step / 10 ** Math.floor(Math.log10(step));
    const even = vals.every((v, i) => Math.abs(v - i * step) <= step * 1e-6);
    const round = vals[0] === 0 && vals.length >= 3 && even && [1, 2, 2.5, 5].some((m) => Math.abs(mant - m) < 1e-6);
    check(round, `round axis ticks on the rates chart (${ticks})`);
  }
  const linkRows = await page.$$eval('#links-table tbody tr', (rows) => rows.length);
  check(linkRows === 1, `one link row (${linkRows})`);

  // Heatmaps: both canvases get drawn pixels.
  const drawn = async (id) => page.$eval(id, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let opaque = 0;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0) { opaque++; if (colours.size < 64) colours.add(`${d[i]},${d[i + 1]},${d[i + 2]}`); }
    }
    return { fraction: opaque / (d.length / 4), colours: colours.size };
  });
  await page.waitForFunction(() => /frame \d/.test(document.getElementById('frame-caption').textContent), null, { timeout: 15000 });
  await sleep(1200);
  const frame = await drawn('#heat-frame');
  const dose = await drawn('#heat-dose');
  check(frame.fraction > 0.9 && frame.colours > 8, `frame heatmap drawn (${(frame.fraction * 100).toFixed(0)} % of pixels, ${frame.colours}+ colours)`);
  check(dose.fraction > 0.9 && dose.colours > 8, `dose heatmap drawn (${(dose.fraction * 100).toFixed(0)} % of pixels, ${dose.colours}+ colours)`);

  // Heatmaps: a value under the mouse, pixel axes, a colour bar with its unit, a log scale, a dose rate.
  await page.hover('#heat-frame');  // scrolled into view, the mouse on its middle
  const hover = await page.$eval('#frame-hover', (e) => e.textContent);
  check(/^row \d+, column \d+ \(channel \d+\): \d+ ADC counts$/.test(hover), `the value under the mouse (${hover})`);
  const axes = await page.$eval('#frame-axes', (e) => e.textContent);
  check(/column 0…63/.test(axes) && /row 0…63/.test(axes), `pixel axes named (${axes})`);
  check((await page.$eval('#frame-unit', (e) => e.textContent)) === 'ADC counts', 'the colour bar says its unit');
  await page.check('#heat-log');
  check(/log scale/.test(await page.$eval('#frame-unit', (e) => e.textContent)), 'log colour scale on');
  await page.uncheck('#heat-log');
  await page.waitForFunction(() => /\/s/.test(document.getElementById('dose-rate').textContent), null, { timeout: 8000 });
  check(true, `dose rate shown (${await page.$eval('#dose-rate', (e) => e.textContent)})`);

  // A second unit can be chosen.
  await page.selectOption('#unit-select', '1');
  await page.waitForFunction(() => document.querySelector('#units-table tr.selected')?.dataset.unit === '1', null, { timeout: 5000 });
  check(true, 'unit 1 selected');

  // The run controls without a token: the page shows daqd's refusal.
  await page.fill('#run-name', 'page01');
  await page.click('#run-start');
  await page.waitForFunction(() => document.getElementById('run-message').textContent.length > 0, null, { timeout: 5000 });
  const refused = await page.$eval('#run-message', (e) => e.textContent);
  check(/Authorization/.test(refused), `start without a token refused on the page (${refused})`);
  // …and with it, a run starts (the 401 above is the only expected failed request).
  const token = fs.readFileSync(path.join(scratch, 'runs', '.daqd-token'), 'utf8').trim();
  await page.fill('#run-token', token);
  await page.click('#run-start');
  await page.waitForFunction(() => document.getElementById('run-badge').textContent.includes('page01'), null, { timeout: 8000 });
  check(true, 'run page01 started from the page');
  await sleep(2500);
  // Live storage figures: free space now, MB/s written while the run records, the writer's backlog.
  const disk = await page.$eval('#disk-free', (e) => e.textContent);
  const written = await page.$eval('#written-mbps', (e) => Number(e.textContent));
  const backlog = await page.$eval('#writer-backlog', (e) => e.textContent);
  check(/iB/.test(disk), `disk free shown (${disk})`);
  check(written > 0, `MB/s written shown while recording (${written})`);
  check(/^\d+ \/ \d+/.test(backlog), `writer backlog shown (${backlog})`);

  await page.evaluate(() => window.scrollTo(0, 0));  // the sticky header belongs at the top
  await sleep(300);
  const shot = path.join(args.out, 'web-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  check(fs.statSync(shot).size > 20000, `screenshot saved: ${shot}`);

  await page.click('#run-stop');
  await page.waitForFunction(() => /stopped/.test(document.getElementById('run-message').textContent), null, { timeout: 15000 });
  check(true, 'run stopped from the page');

  // The token is kept in this tab's session storage: a reload keeps it.
  await page.reload({ waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, { timeout: 15000 });
  const kept = await page.$eval('#run-token', (e) => e.value);
  check(kept === token, 'the token survives a reload (sessionStorage)');
  // The charts start from daqd's own history, not an empty browser memory.
  const seeded = await page.$eval('#rates-chart', (c) => Number(c.dataset.seeded || 0));
  check(seeded >= 5, `after a reload the rates chart starts with ${seeded} s of daqd's history`);

  // A pedestal run from the page, no name typed: daqd names it, it ends by itself.
  await page.fill('#run-name', '');
  await page.fill('#pedestal-frames', '5');
  await page.click('#pedestal-start');
  await page.waitForFunction(() => /Pedestal run run_00001 started/.test(document.getElementById('run-message').textContent),
    null, { timeout: 8000 });
  check(true, 'pedestal run run_00001 started from the page (named by the pattern)');
  let calib = false;
  for (let i = 0; i < 100 && !calib; i++) {
    calib = fs.existsSync(path.join(scratch, 'runs', 'run_00001.calib.h5'));
    if (!calib) await sleep(100);
  }
  check(calib, 'the pedestal run wrote runs/run_00001.calib.h5 by itself');
  await page.waitForFunction(() => document.getElementById('run-badge').textContent === 'idle', null, { timeout: 8000 });
  // A data run with no name: the next number.
  await page.click('#run-start');
  await page.waitForFunction(() => document.getElementById('run-badge').textContent.includes('run_00002'), null, { timeout: 8000 });
  const runCounts = await page.$eval('#run-counts', (e) => e.textContent);
  check(/this run: /.test(runCounts) && /since daqd started/.test(runCounts), `per-run and lifetime counts labelled (${runCounts})`);
  await page.click('#run-stop');
  await page.waitForFunction(() => /run_00002 stopped/.test(document.getElementById('run-message').textContent), null, { timeout: 15000 });
  check(true, 'run run_00002 started and stopped from the page');

  // A phone's width: nothing wider than the screen, and a screenshot.
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(500);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
    .filter((e) => !e.parentElement || e.parentElement.getBoundingClientRect().right <= window.innerWidth + 1)
    .slice(0, 6).map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className}:${Math.round(e.getBoundingClientRect().right)}`).join(' '));
  const phone = path.join(args.out, 'web-page-phone.png');
  await page.screenshot({ path: phone, fullPage: true });
  check(fs.statSync(phone).size > 10000, `phone-width screenshot saved: ${phone}`);
  check(overflow <= 0, `nothing wider than a 390 px screen (${overflow} px over${wide ? ': ' + wide : ''})`);
  // The runs table: each column's cells line up with their header (started/stopped under their names).
  const aligned = await page.$eval('#runs-table', (t) => {
    const ths = [...t.tHead.rows[0].cells], row = t.tBodies[0].rows[0];
    if (!row) return 'no row';
    return ths.every((th, i) => getComputedStyle(th).textAlign === getComputedStyle(row.cells[i]).textAlign) ? 'ok'
      : ths.map((th, i) => `${th.textContent}:${getComputedStyle(th).textAlign}/${getComputedStyle(row.cells[i]).textAlign}`).join(' ');
  });
  check(aligned === 'ok', `runs table: headers aligned with their columns (${aligned})`);

  const unexpected = consoleErrors.filter((e) => !/401 \(Unauthorized\)/.test(e));
  check(unexpected.length === 0, `no console errors${unexpected.length ? ': ' + unexpected.join(' | ') : ''}`);
} catch (e) {
  failures.push(String(e && e.stack ? e.stack : e));
  console.log(`FAIL ${e}`);
  try { console.log(fs.readFileSync(path.join(scratch, 'daqd.log'), 'utf8').slice(-3000)); } catch {}
} finally {
  await cleanup();
}
if (failures.length) {
  console.log(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log('page test passed');

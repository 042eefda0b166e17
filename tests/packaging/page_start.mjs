// Starts a run from daqd's status page in headless Chromium, as an operator
// does: the token typed into the page, a name, Start; waits until the page
// shows the run recording. Used by service_check.py.
//
//   node page_start.mjs --url http://127.0.0.1:PORT --token TOKEN --run NAME --modules DIR/node_modules --profile DIR
//
// Exit status: 0 the run shows as recording on the page, 1 it does not,
// 77 skipped (no chromium or playwright-core).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const CHROMIUM = args.chromium || '/usr/bin/chromium';
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIPPED: ${CHROMIUM} not found (Debian package 'chromium')`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = createRequire(path.join(args.modules, 'noop.js'))('playwright-core'));
} catch (e) {
  console.log(`SKIPPED: playwright-core is not installed in ${args.modules}: ${e.message}`);
  process.exit(77);
}

const browser = await chromium.launchPersistentContext(args.profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let status = 1;
try {
  const page = browser.pages()[0] || await browser.newPage();
  await page.goto(args.url + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, { timeout: 15000 });
  await page.fill('#run-token', args.token);
  await page.fill('#run-name', args.run);
  await page.click('#run-start');
  await page.waitForFunction((name) => document.getElementById('run-badge').textContent.includes(name), args.run,
    { timeout: 10000 });
  console.log(`ok   run ${args.run} started from the page: ${await page.$eval('#run-badge', (e) => e.textContent)}`);
  status = 0;
} catch (e) {
  console.log(`FAIL ${e}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(status);

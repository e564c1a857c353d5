// Drives Debian's Chromium with playwright-core (never a downloaded browser)
// through the page www/index.html (tests/e2e/browser.sh):
//
//   node run.mjs URL MAP_NAME CALL_CMD
//
// URL: the page with its query string; MAP_NAME: the host name the page's
// wss: URL uses, resolved to 127.0.0.1 inside Chromium only
// (--host-resolver-rules: no DNS query leaves the machine); CALL_CMD: a
// shell command run once the page is registered and has placed its call
// (the SIPp caller). Prints window.result as JSON on stdout; the page's
// console goes to stderr. Every wait is bounded.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';

const [url, mapName, callCmd] = process.argv.slice(2);
if (!url || !mapName || !callCmd) {
  console.error('usage: node run.mjs URL MAP_NAME CALL_CMD');
  process.exit(2);
}
const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // The test certificate is made at test time and signed by nobody.
  '--ignore-certificate-errors',
  `--host-resolver-rules=MAP ${mapName} 127.0.0.1`,
];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
let result;
try {
  const page = await (await browser.newContext()).newPage();
  page.on('console', m => console.error(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', e => console.error(`[pageerror] ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.readyForCall === true || window.done === true, null, { timeout: 30000 });
  if (await page.evaluate(() => window.readyForCall === true)) {
    const code = await new Promise(res => {
      const p = spawn('bash', ['-c', callCmd], { stdio: ['ignore', process.stderr, process.stderr] });
      p.on('exit', c => res(c));
    });
    console.error(`caller exited ${code}`);
  }
  await page.waitForFunction(() => window.done === true, null, { timeout: 30000 });
  result = await page.evaluate(() => window.result);
} catch (e) {
  result = { error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result, null, 1));

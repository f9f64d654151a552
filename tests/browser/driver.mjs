// Drives Debian's chromium (never a downloaded browser) through playwright-core for
// tests/browser.rs. Commands come one per line on stdin; each gets one line on stdout:
// "ok <what>" or "error <message>". Screenshots go to SHOTS_DIR (one per step).
//
//   open <url> <domain> <user>  open the web phone, enter the domain, sign in at the IdP
//                               through the pop-up as <user>; ok once registered
//   answer                      wait for an incoming call, answer it, wait until it is up and
//                               then until the caller ends it
//   call <target>               call <target>, wait until it is up, hang up
//   renewed                     wait (up to 90 s) until the page renewed its credential at
//                               refresh_after (the test checks the REGISTER that follows)
//   signout                     sign out; ok once the page says so
//   quit
import readline from 'node:readline';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';

import { chromium } from 'playwright-core';

const SHOTS = process.env.SHOTS_DIR ?? os.tmpdir();
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = 30_000;

let context;
let page;
let shot = 0;

async function screenshot(name) {
  shot += 1;
  const file = path.join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// Waits until `selector`'s text is exactly `text` (a locator: it runs outside the page's
// scripts, so the page's Content-Security-Policy stays in force).
async function textIs(selector, text) {
  const exact = new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  await page.locator(selector, { hasText: exact }).waitFor({ state: 'attached', timeout: WAIT });
}

async function start() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipward-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    // sipward's WSS listener serves the TEST-ONLY certificate set (sipward certs dev).
    ignoreHTTPSErrors: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    ],
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
}

const commands = {
  async open(url, domain, user) {
    await page.goto(url);
    await screenshot('phone-opened');
    await page.fill('#domain', domain);
    await page.click('#next');
    await page.waitForSelector('#signin-0:not([disabled])', { timeout: WAIT });
    await screenshot('login-options');
    const [popup] = await Promise.all([
      context.waitForEvent('page', { timeout: WAIT }),
      page.click('#signin-0'),
    ]);
    popup.on('framenavigated', (f) => { if (f === popup.mainFrame()) process.stderr.write(`[pop-up] ${f.url()}\n`); });
    popup.on('console', (m) => process.stderr.write(`[pop-up] ${m.text()}\n`));
    popup.on('requestfailed', (r) => process.stderr.write(`[pop-up] failed ${r.url()}: ${r.failure()?.errorText}\n`));
    await popup.waitForSelector('#username', { timeout: WAIT });
    await popup.fill('#username', user);
    await popup.screenshot({ path: path.join(SHOTS, `${String(++shot).padStart(2, '0')}-idp-sign-in.png`) });
    await popup.click('#sign-in');
    await textIs('#reg-state', 'registered');
    await screenshot('registered');
    return 'registered';
  },
  async answer() {
    await page.waitForSelector('#incoming:not([hidden])', { timeout: WAIT });
    const from = await page.textContent('#incoming-from');
    await screenshot('incoming-call');
    await page.click('#answer');
    await textIs('#call-state', 'in call');
    await screenshot('call-answered');
    await textIs('#call-state', 'ended');
    await screenshot('call-ended-by-caller');
    return `answered ${from}`;
  },
  async call(target) {
    await page.fill('#target', target);
    await page.click('#call');
    await textIs('#call-state', 'in call');
    await screenshot('outgoing-call-up');
    await page.click('#hangup');
    await textIs('#call-state', 'ended');
    await screenshot('outgoing-call-ended');
    return `called ${target}`;
  },
  async renewed() {
    await page.locator('#log', { hasText: 'credential renewed' }).waitFor({ state: 'attached', timeout: 90_000 });
    await screenshot('credential-renewed');
    return 'renewed';
  },
  async signout() {
    await page.click('#signout');
    await textIs('#reg-state', 'signed out');
    await screenshot('signed-out');
    return 'signed out';
  },
};

async function main() {
  await start();
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, ...args] = line.trim().split(/\s+/);
    if (cmd === 'quit') break;
    const fn = commands[cmd];
    if (!fn) { process.stdout.write(`error unknown command ${cmd}\n`); continue; }
    try {
      const what = await fn(...args);
      process.stdout.write(`ok ${what}\n`);
    } catch (err) {
      let log = '';
      try {
        log = await page.textContent('#log');
        await screenshot(`failed-${cmd}`);
      } catch (_) { /* the page may be gone */ }
      const message = `${err.message}`.split('\n')[0];
      process.stdout.write(`error ${cmd}: ${message} | page log: ${JSON.stringify(log)}\n`);
    }
  }
  await context.close();
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});

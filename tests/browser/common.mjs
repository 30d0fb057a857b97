// What the browser scenarios share: their environment, checks, Debian's Chromium as the
// issue prescribes it, the command protocol with tests/suite/browser.rs, and axe-core.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`missing ${name}`);
  return value;
}

export function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

// A French browser context presenting the workstation certificate in CLIENT_CERT /
// CLIENT_KEY to `gateway` (none when they are not set: the demo's case).
export function context(browser, gateway, options = {}) {
  const certificate = process.env.CLIENT_CERT
    ? { clientCertificates: [{ origin: gateway, certPath: env('CLIENT_CERT'), keyPath: env('CLIENT_KEY') }] }
    : {};
  return browser.newContext({ ignoreHTTPSErrors: true, locale: 'fr-FR', ...certificate, ...options });
}

const lines = createInterface({ input: process.stdin });

// Prints `command` for tests/suite/browser.rs and waits until it says it is done.
export async function ask(command) {
  console.log(command);
  // A harness that does not know the command never answers: fail, never hang.
  await new Promise((resolve, reject) => {
    const unanswered = setTimeout(() => reject(new Error(`the harness did not answer ${command}`)), 60_000);
    lines.once('line', (line) => {
      clearTimeout(unanswered);
      resolve(line);
    });
  });
}

// Ends the scenario: its result for tests/suite/browser.rs.
export function finish(result) {
  console.log('RESULT ' + JSON.stringify(result));
  process.exit(0);
}

// axe-core, run through the DevTools protocol (the page's CSP forbids injected scripts):
// no serious or critical violation.
export async function accessible(page, screen) {
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const report = await window.axe.run(document, { resultTypes: ['violations'] });
    return report.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  check(found.length === 0, `accessibility (${screen}): ${found.join(' | ')}`);
}

// The physician's access form on a test gateway, keyboard only: INS, the test identifier
// kind (after the demo one), the call id, the first reason, then the focus on the details
// field, where Enter submits.
export async function fillAccessForm(page, ins, callId) {
  await page.locator('#ins').focus();
  await page.keyboard.type(ins);
  await page.locator('#ins-check.ok').waitFor();
  await page.keyboard.press('Tab');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Tab');
  await page.keyboard.type(callId);
  await page.keyboard.press('Tab');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Tab');
}

// The scenario's gateway and the directory its screenshots go to (created).
export function setup() {
  const shots = env('SHOTS');
  mkdirSync(shots, { recursive: true });
  return { gateway: env('GATEWAY'), shots };
}

// Loads the physician's page with the card in and types the PIN: the patient screen.
export async function unlock(page, gateway) {
  await page.goto(gateway + '/');
  await page.locator('#pin').waitFor({ state: 'visible' });
  await page.keyboard.type('1234');
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
}

export const ALLERGIES = 'Allergies et intolérances';

// Opens the patient's summary; checks the allergies come first and returns the text of
// each section block by heading.
export async function openSummary(page, ins, callId) {
  await fillAccessForm(page, ins, callId);
  await page.keyboard.press('Enter');
  await page.locator('#screen-summary .allergies').waitFor({ state: 'visible' });
  const first = await page.locator('#summary > section').first().getAttribute('class');
  check(first.includes('allergies'), 'allergies come first');
  return page.locator('#summary > section').evaluateAll((blocks) =>
    Object.fromEntries(blocks.map((b) => [b.querySelector('h2').textContent, b.innerText])));
}

// Closes the access by keyboard: back to the patient screen.
export async function closeSummary(page) {
  await page.locator('#close-access').focus();
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
}

// Counts, inside the page, its script's calls to `path` (as it writes it: '/api/v1/desk')
// and the answers to them it has read, by wrapping window.fetch through the DevTools
// protocol (the page's own code is unchanged). Unlike Playwright's request events, which
// reach this script later, `asked` is current as soon as the page's handlers have run;
// `settled` proves the page has handled every answer so far, even one it drops without a
// trace in the DOM. Install before the calls to count; a reload removes it.
export async function countCalls(page, path) {
  await page.evaluate((path) => {
    const counts = { asked: 0, read: 0 };
    window.__calls = window.__calls || {};
    window.__calls[path] = counts;
    const original = window.fetch;
    window.fetch = (input, init) => {
      if (String(input) !== path) return original(input, init);
      counts.asked += 1;
      return original(input, init).then((response) => {
        const json = response.json;
        // Counted before the page's code after `await response.json()` runs; it runs in
        // the same turn, so a poll that sees the count sees what that code did.
        response.json = function () { return json.call(this).finally(() => { counts.read += 1; }); };
        return response;
      }, (error) => {
        counts.read += 1;
        throw error;
      });
    };
  }, path);
  return {
    asked: () => page.evaluate((path) => window.__calls[path].asked, path),
    // Waits until at least `least` calls were made and every answer to them was read.
    settled: (least = 0, timeout = 30000) => page.waitForFunction(([path, least]) => {
      const counts = window.__calls[path];
      return counts.asked >= least && counts.read >= counts.asked;
    }, [path, least], { timeout }),
  };
}

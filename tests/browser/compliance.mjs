// The compliance view in Debian's Chromium, driven by Playwright, with an officer's
// certificate. Started by tests/browser.rs on a gateway whose trail holds two
// break-glass accesses (calls CRRA-1 and CRRA-2).
// Environment: GATEWAY, CLIENT_CERT / CLIENT_KEY (the officer's), SHOTS.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`missing ${name}`);
  return value;
};
const gateway = env('GATEWAY');
const shots = env('SHOTS');
mkdirSync(shots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const result = {};
try {
  const context = await browser.newContext({
    clientCertificates: [{ origin: gateway, certPath: env('CLIENT_CERT'), keyPath: env('CLIENT_KEY') }],
    ignoreHTTPSErrors: true,
    locale: 'fr-FR',
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(gateway + '/conformite');
  const rows = page.locator('#accesses tbody tr');
  await rows.first().waitFor();
  check((await rows.count()) === 2, 'two accesses to review');

  // Filters narrow the list without another request.
  await page.locator('#filter-text').fill('CRRA-2');
  check((await rows.count()) === 1, 'the filter keeps one access');
  check((await page.locator('#count').textContent()).includes('1 accès affichés sur 2'), 'the count says so');
  await page.locator('#filter-text').fill('');

  // An access's trail, then a decision: it leaves the list.
  await page.locator('#accesses tbody tr').first().getByRole('button').click();
  await page.locator('#detail').waitFor({ state: 'visible' });
  const trail = await page.locator('#trail').textContent();
  check(trail.includes('Début de l’accès') && trail.includes('Connexion par carte'), `the trail: ${trail}`);
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => (await window.axe.run(document))
    .violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`));
  check(violations.length === 0, `accessibility: ${violations.join(' | ')}`);
  await page.screenshot({ path: `${shots}/8-conformite.png`, fullPage: true });
  await page.getByLabel('Justifié', { exact: true }).check();
  await page.locator('#comment').fill('Arrêt cardio-respiratoire, appel vérifié.');
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await page.locator('#detail').waitFor({ state: 'hidden' });
  await page.waitForFunction(() => document.querySelectorAll('#accesses tbody tr').length === 1);
  result.left = await rows.count();
  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
console.log('RESULT ' + JSON.stringify(result));
process.exit(0);

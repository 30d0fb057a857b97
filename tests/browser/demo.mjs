// `samu-gateway demo` in Debian's Chromium: the printed URL works in a browser on the same
// machine without any client certificate (demo-only loopback mapping, with its banner),
// and the whole flow reaches a sample patient's allergies.
// Environment: URL (from demo.json), PIN, INS (a sample patient with allergies).

import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`missing ${name}`);
  return value;
};
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const result = {};
try {
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true, locale: 'fr-FR' })).newPage();
  await page.goto(env('URL'));
  await page.locator('#demo-banner').waitFor({ state: 'visible' });
  result.banner = (await page.locator('#demo-banner').textContent()).trim();
  await page.locator('#pin').waitFor({ state: 'visible' });
  await page.keyboard.type(env('PIN'));
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  await page.keyboard.type(env('INS'));
  await page.keyboard.press('Tab'); // the demo identifier kind comes first on a demo gateway
  await page.keyboard.press('Tab');
  await page.keyboard.type('DEMO-0001');
  await page.keyboard.press('Tab');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.locator('#summary .allergies').waitFor({ state: 'visible' });
  result.allergies = await page.locator('#summary .allergies').textContent();
  check(/nicilline/.test(result.allergies), `allergies: ${result.allergies}`);
} finally {
  await browser.close();
}
console.log('RESULT ' + JSON.stringify(result));
process.exit(0);

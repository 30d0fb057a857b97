// The demo's URL in Debian's Firefox ESR, driven over WebDriver BiDi by puppeteer-core (no
// downloaded browser, no geckodriver): the page works there too, from the card to the
// allergies. The demo maps this machine's connections without a certificate to its desk,
// so no client certificate is needed. Environment: URL, PIN, INS (as demo.mjs).

import puppeteer from 'puppeteer-core';
import { check, env, finish } from './common.mjs';

const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
  headless: true,
  acceptInsecureCerts: true,
  extraPrefsFirefox: { 'intl.accept_languages': 'fr-FR' },
});
const result = {};
try {
  const page = await browser.newPage();
  await page.goto(env('URL'));
  await page.waitForSelector('#demo-banner:not([hidden])');
  await page.waitForSelector('#pin', { visible: true });
  await page.keyboard.type(env('PIN'));
  await page.keyboard.press('Enter');
  await page.waitForSelector('#screen-patient:not([hidden])');
  await page.keyboard.type(env('INS'));
  await page.waitForSelector('#ins-check.ok');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  await page.keyboard.type('DEMO-0002');
  await page.select('#reason', 'inconscient');
  await page.focus('#reason-text');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#summary .allergies', { visible: true });
  result.allergies = await page.$eval('#summary .allergies', (e) => e.textContent);
  check(/nicilline/.test(result.allergies), `allergies: ${result.allergies}`);
  result.userAgent = await browser.version();
} finally {
  await browser.close();
}
finish(result);

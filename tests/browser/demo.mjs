// `samu-gateway demo` in Debian's Chromium: the printed URL works in a browser on the same
// machine without any client certificate (demo-only loopback mapping, with its banner),
// and the whole flow reaches a sample patient's allergies.
// Environment: URL (from demo.json), PIN, INS (a sample patient with allergies).

import { check, context, env, finish, launch } from './common.mjs';

const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, env('URL'))).newPage();
  await page.goto(env('URL'));
  await page.locator('#demo-banner').waitFor({ state: 'visible' });
  result.banner = (await page.locator('#demo-banner').textContent()).trim();
  await page.locator('#pin').waitFor({ state: 'visible' });
  await page.keyboard.type(env('PIN'));
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  // The three allergy statuses of the sample patients, told apart at a glance.
  async function allergiesOf(ins) {
    await page.keyboard.type(ins);
    await page.keyboard.press('Tab'); // the demo identifier kind comes first on a demo gateway
    await page.keyboard.press('Tab');
    await page.keyboard.type('DEMO-0001');
    await page.keyboard.press('Tab');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.locator('#summary .allergies').waitFor({ state: 'visible' });
    const text = await page.locator('#summary .allergies').textContent();
    await page.locator('#close-access').focus();
    await page.keyboard.press('Enter');
    await page.locator('#screen-patient').waitFor({ state: 'visible' });
    return text;
  }
  result.allergies = await allergiesOf(env('INS'));
  check(/nicilline/.test(result.allergies), `allergies: ${result.allergies}`);
  const noneKnown = await allergiesOf(env('INS_NONE_KNOWN'));
  check(noneKnown.includes('Aucune allergie connue'), `none known: ${noneKnown}`);
  const notRecorded = await allergiesOf(env('INS_NOT_RECORDED'));
  check(notRecorded.includes('Allergies non renseignées') && !notRecorded.includes('Aucune'),
    `not recorded: ${notRecorded}`);
} finally {
  await browser.close();
}
finish(result);

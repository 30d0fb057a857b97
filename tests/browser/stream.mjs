// The physician's page never shows data it can no longer vouch for.
// 1. The card is pulled while an access is on its way (the record service slowed down):
//    nothing is shown (the gateway refuses to release it, and the page drops any answer
//    asked for before a clearing).
// 2. The event stream breaks (the gateway stops) while a summary is shown: the page can no
//    longer learn of a pulled card, so it hides the summary at once.
// Started by tests/suite/browser.rs, which acts on SLOW_UPSTREAM, FAST_UPSTREAM, REMOVE, INSERT
// and GATEWAY_DOWN. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, INS.

import { ask, check, context, env, fillAccessForm, finish, launch } from './common.mjs';

const gateway = env('GATEWAY');
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  await page.goto(gateway + '/');
  async function login() {
    await page.locator('#pin').waitFor({ state: 'visible' });
    await page.keyboard.type('1234');
    await page.keyboard.press('Enter');
    await page.locator('#screen-patient').waitFor({ state: 'visible' });
  }
  const patientText = async () => /p[ée]nicillin/i.test(await page.evaluate(() => document.body.innerText));

  await login();
  await ask('SLOW_UPSTREAM');
  await fillAccessForm(page, env('INS'), 'CRRA-2026-000043');
  await page.keyboard.press('Enter');
  await ask('REMOVE');
  await page.locator('#screen-card').waitFor({ state: 'visible' });
  await page.waitForTimeout(2500); // past the slowed answer
  check(await page.locator('#summary').evaluate((s) => s.childElementCount === 0), 'the late answer is not shown');
  check(!(await patientText()), 'no patient datum after the card left');
  result.lateAnswerDropped = true;

  await ask('FAST_UPSTREAM');
  await ask('INSERT');
  await login();
  await fillAccessForm(page, env('INS'), 'CRRA-2026-000044');
  await page.keyboard.press('Enter');
  await page.locator('#summary .allergies').waitFor({ state: 'visible' });
  await ask('GATEWAY_DOWN');
  const down = Date.now();
  await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0,
    null, { timeout: 5000, polling: 10 });
  result.hiddenMs = Date.now() - down;
  check((await page.locator('#message').textContent()).includes('masquée par sécurité'), 'the page says why');
  check(!(await patientText()), 'no patient datum left');
} finally {
  await browser.close();
}
finish(result);

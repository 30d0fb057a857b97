// The physician's page fails closed: when its event stream breaks (here: the gateway
// stops), it cannot learn of a pulled card any more, so it hides the summary at once.
// Started by tests/browser.rs, which stops the gateway on "GATEWAY_DOWN".
// Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, INS.

import { ask, check, context, env, fillAccessForm, finish, launch } from './common.mjs';

const gateway = env('GATEWAY');
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  await page.goto(gateway + '/');
  await page.locator('#pin').waitFor({ state: 'visible' });
  await page.keyboard.type('1234');
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  await fillAccessForm(page, env('INS'), 'CRRA-2026-000043');
  await page.keyboard.press('Enter');
  await page.locator('#summary .allergies').waitFor({ state: 'visible' });
  await ask('GATEWAY_DOWN');
  const down = Date.now();
  await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0,
    null, { timeout: 5000, polling: 10 });
  result.hiddenMs = Date.now() - down;
  check((await page.locator('#message').textContent()).includes('masquée par sécurité'), 'the page says why');
  check(!/p[ée]nicillin/i.test(await page.evaluate(() => document.body.innerText)), 'no patient datum left');
} finally {
  await browser.close();
}
finish(result);

// A PIN-pad desk's page: the card inserted, the page asks for the code on the reader and
// starts the entry itself (no action on the screen); a reader without a keypad (vpcd) is
// refused with a clear French message and a button to try again. Started by
// tests/suite/browser.rs. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY (desk B's).

import { check, context, env, finish, launch } from './common.mjs';

const gateway = env('GATEWAY');
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  await page.goto(gateway + '/');
  await page.locator('#card-detail').filter({ hasText: 'Saisissez votre code sur le lecteur' }).waitFor();
  check(await page.locator('#pin').isHidden(), 'no PIN field at a PIN-pad desk');
  await page.locator('#message').filter({ hasText: 'ne permet pas la saisie du code' }).waitFor();
  result.message = await page.locator('#message').textContent();
  await page.locator('#pinpad-start').waitFor({ state: 'visible' });
  check(await page.evaluate(() => document.activeElement.id === 'pinpad-start'), 'the retry button has the focus');
} finally {
  await browser.close();
}
finish(result);

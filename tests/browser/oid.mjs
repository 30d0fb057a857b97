// A desk on a gateway that refuses test identifiers: the record service answers a search
// by identity traits with a patient identified under the test INS type, which the desk
// does not offer. Choosing them must not fill their number in under a type it offers.
// Started by tests/suite/browser.rs. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY (desk
// A's), FAMILY (the patient's birth name), SHOTS.

import { check, context, env, finish, launch, setup, unlock } from './common.mjs';

const TEST_OID = '1.2.250.1.213.1.4.10';
const { gateway } = setup();
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  await unlock(page, gateway);
  const offered = await page.locator('#ins-oid option').evaluateAll((options) => options.map((o) => o.value));
  check(offered.length > 0 && !offered.includes(TEST_OID), `the desk offers no test identifier: ${offered}`);
  await page.locator('#call-id').fill('CRRA-2026-000077');
  await page.locator('#reason').selectOption({ index: 1 });
  await page.locator('#traits-toggle').click();
  await page.locator('#birth-name').fill(env('FAMILY'));
  await page.locator('#first-names').fill('Camille');
  await page.locator('#birth-date').fill('1980-01-17');
  await page.keyboard.press('Enter'); // in a trait field, Enter searches
  const candidate = page.locator('#candidates button:not([disabled])').first();
  await candidate.waitFor();
  await candidate.click();
  await page.locator('#message').filter({ hasText: 'ne propose pas' }).waitFor();
  check((await page.locator('#ins').inputValue()) === '', 'the number is not filled in under another type');
  check(offered.includes(await page.locator('#ins-oid').inputValue()), 'the type stays one the desk offers');
  check((await page.locator('#candidates button').count()) > 0, 'the candidates stay for another choice');
  result.refused = true;
} finally {
  await browser.close();
}
finish(result);

// An export the gateway cuts short (a damaged record in the trail) is a failed download in
// the browser's list, never a whole-looking file. Started by tests/suite/browser.rs on a
// gateway whose trail holds a damaged record. Environment: GATEWAY, CLIENT_CERT /
// CLIENT_KEY (an officer's), SHOTS.

import { check, context, finish, launch, setup } from './common.mjs';

const { gateway } = setup();
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  await page.goto(gateway + '/conformite');
  await page.locator('#export').waitFor({ state: 'visible' });
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#export').click(),
  ]);
  check(/\/api\/v1\/compliance\/downloads\/[0-9a-f]{32}$/.test(download.url()), `downloaded from: ${download.url()}`);
  // Settles once the transfer ends, whichever way: null only for a whole file.
  result.failure = await download.failure();
  check(result.failure !== null, 'the export cut short is a failed download');
} finally {
  await browser.close();
}
finish(result);

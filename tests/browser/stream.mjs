// The physician's page never shows data it can no longer vouch for.
// 1. The card is pulled while an access is on its way (the record service slowed down):
//    nothing is shown (the gateway refuses to release it, and the page drops any answer
//    asked for before a clearing).
// 2. The event stream breaks (the gateway stops) while a summary is shown: the page can no
//    longer learn of a pulled card, so it hides the summary at once.
// 3. The gateway comes back (a new process, a new CSRF key): the page logs in and opens a
//    summary without being reloaded, and follows the desk again (a card pulled hides it).
// Throughout, the event stream was first refused (503, as a proxy or a starting gateway
// answers): the browser gives up on such a stream, so the page must open it again, or a
// pulled card would go unnoticed.
// 4. The gateway freezes (the stream stays open and silent): the page takes a stream
//    silent for 25 s (2.5 of the gateway's beats) for a lost one and hides the summary.
// Started by tests/suite/browser.rs, which acts on SLOW_UPSTREAM, FAST_UPSTREAM, REMOVE, INSERT,
// GATEWAY_DOWN, GATEWAY_UP, GATEWAY_FREEZE and GATEWAY_THAW. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, INS.

import { ask, check, context, countCalls, env, fillAccessForm, finish, launch } from './common.mjs';

const gateway = env('GATEWAY');
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway)).newPage();
  const events = '**/api/v1/desk/events';
  let refused = 0;
  await page.route(events, (route) => {
    refused += 1;
    route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable"}' });
  });
  await page.goto(gateway + '/');
  for (let i = 0; refused === 0; i += 1) {
    check(i < 100, 'the page asked for its event stream');
    await page.waitForTimeout(50);
  }
  const reopened = page.waitForResponse((r) => r.url().endsWith('/api/v1/desk/events') && r.status() === 200,
    { timeout: 10000 });
  await page.unroute(events);
  await reopened;
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
  const lateAnswer = page.waitForResponse((r) => r.url().endsWith('/api/v1/break-glass'));
  await page.keyboard.press('Enter');
  // Pulled once the access is on the record and its answer under way (slowed).
  await ask('REMOVE_DURING_ACCESS');
  // Told by the event stream (the page's own check of the desk is every 30 s).
  await page.locator('#screen-card').waitFor({ state: 'visible', timeout: 5000 });
  // The slowed answer has come and the page is done with it: it enables the access
  // button again only then, in the same turn where it would show a summary.
  await lateAnswer;
  await page.waitForFunction(() => !document.querySelector('#access-submit').disabled);
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
  check(await page.locator('#link-state').isVisible(), 'the page says its link to the gateway is down');

  await ask('GATEWAY_UP');
  // A new process has no card session: the page finds it again and asks for the PIN,
  // without being reloaded (and with the new process's CSRF token).
  await page.locator('#link-state').waitFor({ state: 'hidden', timeout: 20000 });
  await login();
  await fillAccessForm(page, env('INS'), 'CRRA-2026-000045');
  await page.keyboard.press('Enter');
  await page.locator('#summary .allergies').waitFor({ state: 'visible', timeout: 10000 });
  result.shownAfterRestart = true;
  await ask('REMOVE');
  const pulled = Date.now();
  await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0,
    null, { timeout: 5000, polling: 10 });
  result.hiddenAfterRestartMs = Date.now() - pulled;
  check(!(await patientText()), 'no patient datum after the card left');

  // Answers about the desk can cross: the one the login asked for (a session) is held
  // back until after the card was pulled; the page must not show that session again.
  await ask('INSERT');
  const deskCalls = await countCalls(page, '/api/v1/desk');
  let held = 0;
  let armed = false;
  // Held until the card has left (below); 10 s at most, should the login wait for this
  // very answer (the answers then did not cross, and the check below says so).
  let cardLeft = false;
  let releasedAfterRemoval = false;
  let releaseHeld = null;
  const heldBack = new Promise((resolve) => { releaseHeld = resolve; });
  let heldGiven = null;
  const heldAnswered = new Promise((resolve) => { heldGiven = resolve; });
  await page.route('**/api/v1/desk', async (route) => {
    if (!armed || held > 0) return route.continue();
    held += 1;
    try {
      const response = await route.fetch();
      await Promise.race([heldBack, new Promise((resolve) => setTimeout(resolve, 10000))]);
      releasedAfterRemoval = cardLeft;
      await route.fulfill({ response });
    } finally {
      heldGiven();
    }
  });
  await page.locator('#pin').waitFor({ state: 'visible' });
  await page.keyboard.type('1234');
  armed = true; // the first answer asked after the PIN: the session
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  check(held === 1, 'an answer about the desk was held back');
  await ask('REMOVE');
  await page.locator('#screen-card').waitFor({ state: 'visible', timeout: 5000 });
  cardLeft = true;
  releaseHeld();
  await heldAnswered;
  check(releasedAfterRemoval, 'the held answer about the desk was given after the card left');
  // The page has read every answer about the desk, the held one included.
  await deskCalls.settled(1);
  check(await page.locator('#screen-card').isVisible(), 'the card screen stays after an older answer');
  check(await page.locator('#session-bar').isHidden(), 'no session shown after the card left');
  result.olderDeskAnswerDropped = true;

  // The gateway freezes (its connections stay open and say nothing more, as after a
  // firewall dropped the link's state without a reset): the page takes the silent stream
  // for a lost one and hides the summary.
  await ask('INSERT');
  await login();
  await fillAccessForm(page, env('INS'), 'CRRA-2026-000046');
  const access = page.waitForResponse((r) => r.url().endsWith('/api/v1/break-glass'));
  await page.keyboard.press('Enter');
  await page.locator('#summary .allergies').waitFor({ state: 'visible', timeout: 10000 });
  const grantPath = '/api/v1/grants/' + encodeURIComponent((await (await access).json()).grant.id);
  // Its end on the record, which the page asks for once the link is back (below); a
  // failed attempt (5xx) is asked again by the page.
  const grantEnded = page.waitForResponse((r) => r.request().method() === 'DELETE' &&
    new URL(r.url()).pathname === grantPath && r.status() < 500, { timeout: 120000 });
  grantEnded.catch(() => {}); // awaited below: a failure before then must not surface as unhandled
  await ask('GATEWAY_FREEZE');
  const frozen = Date.now();
  try {
    await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0,
      null, { timeout: 45000, polling: 100 });
    result.hiddenWhenSilentMs = Date.now() - frozen;
    check(!(await patientText()), 'no patient datum left on a silent link');
    check(await page.locator('#link-state').isVisible(), 'the page says its link to the gateway is down');
  } finally {
    await ask('GATEWAY_THAW');
  }
  // The link back, the page ends on the record the grant whose summary it masked.
  await page.locator('#link-state').waitFor({ state: 'hidden', timeout: 30000 });
  const ended = await grantEnded;
  check(ended.status() === 204, `the masked grant is ended on the record: ${ended.status()}`);
  result.linkBack = true;
} finally {
  await browser.close();
}
finish(result);

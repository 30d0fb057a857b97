// The physician's page in Debian's Chromium, driven by Playwright. Started by
// tests/suite/browser.rs, which runs the real gateway, pcscd with the virtual card and the dev
// upstream, and acts on what this script prints: "UPSTREAM_DOWN" (the record service
// answers 503 from then on), "REMOVE" (the card leaves the reader) and "INSERT" (it comes
// back); it answers "done".
//
// Environment: GATEWAY (base URL), CLIENT_CERT / CLIENT_KEY (the desk's workstation
// certificate), INS (a patient with a penicillin allergy), OPPOSED_INS (opposed to
// Centre 15 access), SHOTS (where screenshots go).
// Prints one JSON line starting with RESULT, and exits non-zero on the first failure.

import { accessible, ask, check, context, countCalls, env, fillAccessForm, finish, launch, setup } from './common.mjs';

const { gateway, shots } = setup();

const browser = await launch();
const result = {};
try {
  const browsing = await context(browser, gateway, { viewport: { width: 1280, height: 900 } });
  const page = await browsing.newPage();
  // Script errors and refused loads (CSP) fail the scenario; refused API calls (401, 403)
  // are the scenario's own and are expected.
  const violations = [];
  page.on('pageerror', (error) => violations.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) {
      violations.push(message.text());
    }
  });
  page.on('response', (answer) => {
    if (answer.status() === 404) violations.push('404 ' + new URL(answer.url()).pathname);
  });

  // Card inserted: the holder's name, and the PIN field has the focus.
  const response = await page.goto(gateway + '/');
  const csp = response.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), 'strict CSP on the page');
  await page.locator('#pin').waitFor({ state: 'visible' });
  check((await page.locator('#card-title').textContent()).startsWith('Dr '), 'the card holder is named');
  check(await page.evaluate(() => document.activeElement.id === 'pin'), 'the PIN field has the focus');
  check(await page.locator('#session-bar').isHidden(), 'no session bar before login');
  await page.screenshot({ path: `${shots}/1-carte-inseree.png`, fullPage: true });
  await accessible(page, 'card');

  // A wrong PIN says how many tries are left; the right one opens the session.
  await page.keyboard.type('0000');
  await page.keyboard.press('Enter');
  await page.locator('#message').filter({ hasText: 'Il reste 2 essais' }).waitFor();
  await page.screenshot({ path: `${shots}/2-code-errone.png`, fullPage: true });
  await page.keyboard.type('1234');
  await page.keyboard.press('Enter');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  check(await page.evaluate(() => document.activeElement.id === 'ins'), 'the INS field has the focus');
  const cookie = (await browsing.cookies()).find((c) => c.name === 'samu_session');
  check(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict',
    `session cookie HttpOnly; Secure; SameSite=Strict: ${JSON.stringify(cookie && { ...cookie, value: '…' })}`);
  check(!(await page.evaluate(() => document.cookie)).includes('samu_session'), 'no script reads the session');
  check((await page.locator('#who').textContent()).startsWith('Dr '), 'the session bar names the physician');
  check((await page.locator('#session-since').textContent()).includes('fin de session dans'), 'the session bar says when it ends');
  await page.screenshot({ path: `${shots}/3-identification.png`, fullPage: true });
  await accessible(page, 'identification');

  // Keyboard only: INS, call id, reason, Enter.
  async function requestAccess(ins) {
    await fillAccessForm(page, ins, 'CRRA-2026-000042');
    await page.keyboard.press('Enter');
  }

  // Opposition: a clear French message, nothing shown.
  await requestAccess(env('OPPOSED_INS'));
  await page.locator('#message').filter({ hasText: /opposé/i }).waitFor();
  check(await page.locator('#screen-summary').isHidden(), 'no summary after an opposition');
  result.opposition = await page.locator('#message').textContent();
  await page.screenshot({ path: `${shots}/4-opposition.png`, fullPage: true });
  await page.locator('#access-form').evaluate((form) => form.reset());

  // Without an INS at hand: the call and the reason first (a search releases identities:
  // it is refused without them), then identity traits, the record service's candidates,
  // a choice that fills the INS, Enter.
  await page.locator('#traits-toggle').click();
  await page.locator('#birth-name').fill(env('FAMILY'));
  await page.locator('#first-names').fill('Camille');
  await page.locator('#birth-date').fill('1980-01-17');
  await page.keyboard.press('Enter'); // in a trait field, Enter searches
  await page.locator('#message').filter({ hasText: 'numéro d\u2019appel et le motif' }).waitFor();
  check(await page.evaluate(() => document.activeElement.id === 'call-id'), 'a search asks for the call first');
  check(await page.locator('#candidates').evaluate((c) => c.childElementCount === 0), 'nothing searched yet');
  await page.keyboard.type('CRRA-2026-000042');
  await page.keyboard.press('Tab');
  await page.keyboard.press('ArrowDown');
  // Two searches cross: the first (a mistyped birth date, nobody found) is answered
  // last; the candidates shown stay the corrected search's.
  let releaseFirst = null;
  let searches = 0;
  const searchCalls = await countCalls(page, '/api/v1/patients/search');
  const searchRoute = '**/api/v1/patients/search';
  await page.route(searchRoute, async (route) => {
    searches += 1;
    if (searches > 1) return route.continue();
    const response = await route.fetch();
    await new Promise((resolve) => { releaseFirst = resolve; });
    return route.fulfill({ response });
  });
  await page.locator('#birth-date').fill('1981-01-17');
  await page.locator('#birth-date').focus();
  await page.keyboard.press('Enter');
  for (let i = 0; releaseFirst === null; i += 1) {
    check(i < 200, 'the first search was sent');
    await page.waitForTimeout(25);
  }
  await page.locator('#birth-date').fill('1980-01-17');
  await page.locator('#birth-date').focus();
  await page.keyboard.press('Enter');
  await page.locator('#candidates button:not([disabled])').first().waitFor();
  releaseFirst();
  // The page has read both answers, the late one included (it leaves no trace when
  // dropped): only then can the check below catch it replacing the candidates.
  await searchCalls.settled(2);
  check(await page.locator('#candidates button:not([disabled])').count() > 0,
    'a search answered late does not replace a later one');
  await page.unroute(searchRoute);
  const candidate = page.locator('#candidates button:not([disabled])').first();
  await candidate.waitFor();
  check(await candidate.evaluate((b) => b === document.activeElement), 'the first candidate has the focus');
  await page.screenshot({ path: `${shots}/3b-recherche-identite.png`, fullPage: true });
  await page.keyboard.press('Enter');
  check((await page.locator('#ins').inputValue()) === env('INS'), 'the choice fills the INS');
  check(await page.evaluate(() => document.activeElement.id === 'access-submit'), 'then the access is one key away');
  await page.keyboard.press('Enter');
  await page.locator('#screen-summary .allergies').waitFor({ state: 'visible' });
  const first = await page.locator('#summary > section').first().getAttribute('class');
  check(first.includes('allergies'), 'allergies come first');
  const allergies = await page.locator('#summary .allergies').textContent();
  check(/p[ée]nicillin/i.test(allergies), `the allergy is shown: ${allergies}`);
  // Whose it is, before anything: the identifier asked for and the patient the document
  // names.
  const whose = await page.locator('#summary > p.patient').innerText();
  check(whose.includes('INS demandé ' + env('INS')) && whose.includes('17 janvier 1980') && whose.includes('femme'), `whose: ${whose}`);
  check((await page.locator('#grant-banner').textContent()).includes('ACCÈS'), 'the access banner is shown');
  check(!page.url().includes(env('INS')), 'no INS in the URL');
  await page.screenshot({ path: `${shots}/5-synthese.png`, fullPage: true });
  await accessible(page, 'summary');

  // Closing the access is one key press away (focus on the button, Enter).
  async function closeAccess() {
    await page.locator('#close-access').focus();
    await page.keyboard.press('Enter');
    await page.locator('#screen-patient').waitFor({ state: 'visible' });
    check(await page.locator('#summary').evaluate((s) => s.childElementCount === 0), 'closing clears the summary');
  }
  await closeAccess();

  // A document with entries the gateway could not read: the summary says it may be partial.
  await requestAccess(env('PARTIAL_INS'));
  await page.locator('#summary .partial').waitFor({ state: 'visible' });
  check((await page.locator('#summary .partial').textContent()).includes('partielle'), 'partial summary flagged');
  await closeAccess();

  // The record service goes down: the next access shows the cached copy, labelled stale
  // with its age.
  await ask('UPSTREAM_DOWN');
  await page.waitForTimeout(1100); // past the copy's freshness bound (fresh_seconds = 1)
  await requestAccess(env('INS'));
  await page.locator('#stale-banner').waitFor({ state: 'visible' });
  const stale = await page.locator('#stale-banner').textContent();
  check(stale.includes('DONNÉES ANCIENNES') && /datant de/.test(stale), `stale banner: ${stale}`);
  result.stale = stale;
  await page.screenshot({ path: `${shots}/6-donnees-anciennes.png`, fullPage: true });

  // Card pulled: every patient datum leaves the page within a second.
  await ask('REMOVE');
  const removed = Date.now();
  await page.waitForFunction(
    () => document.querySelector('#summary').childElementCount === 0 &&
      !document.querySelector('#screen-card').hidden,
    null,
    { timeout: 5000, polling: 10 },
  );
  result.clearedMs = Date.now() - removed;
  const text = await page.evaluate(() => document.body.innerText);
  check(!/p[ée]nicillin/i.test(text) && !text.includes(env('INS')), 'no patient datum left in the page');
  await page.screenshot({ path: `${shots}/7-carte-retiree.png`, fullPage: true });
  await page.reload();
  await page.locator('#card-title').filter({ hasText: 'Insérez votre carte' }).waitFor();
  check(!/p[ée]nicillin/i.test(await page.evaluate(() => document.body.innerText)), 'nothing after a reload');

  // The card back in the reader: three wrong PINs block it, and the page says so.
  await ask('INSERT');
  await page.locator('#pin').waitFor({ state: 'visible' });
  for (const expected of ['Il reste 2 essais', 'dernier essai']) {
    await page.keyboard.type('0000');
    await page.keyboard.press('Enter');
    await page.locator('#message').filter({ hasText: expected }).waitFor();
  }
  // The last try is spent only once the physician ticks the box.
  await page.locator('#last-try-box').waitFor({ state: 'visible' });
  await page.locator('#pin').focus();
  await page.keyboard.type('0000');
  await page.keyboard.press('Enter');
  await page.locator('#message').filter({ hasText: 'cochez la case' }).waitFor();
  check(await page.evaluate(() => document.activeElement.id === 'last-try'), 'the box has the focus');
  await page.keyboard.press('Space');
  await page.locator('#pin').focus();
  await page.keyboard.type('0000');
  await page.keyboard.press('Enter');
  await page.locator('#message').filter({ hasText: 'Carte bloquée' }).waitFor();
  await page.locator('#card-detail').filter({ hasText: 'Carte bloquée' }).waitFor();
  check(await page.locator('#pin-form').isHidden(), 'no PIN field for a blocked card');
  await page.screenshot({ path: `${shots}/2b-carte-bloquee.png`, fullPage: true });
  result.consoleErrors = violations;
  check(violations.length === 0, `no console error: ${violations.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

// Defective documents on the physician's page: each state in French, inside the block it
// concerns, allergies still first. Started by tests/suite/browser.rs with the gateway, the
// virtual card and the dev upstream serving the project's synthetic defective bundles.
// Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, SHOTS, and one INS per document:
// CONFLICT_INS (a shared fullUrl: "no known allergies" then penicillin, plus a dangling
// entry), FAMILY_INS (family members' entries), UNLISTED_INS ("none known" listed, a
// peanut allergy not listed), VERSIONED_INS (a missing version in the problem list),
// CONTRADICTION_INS ("none known" and "no information"), NO_INS_INS (the document names
// no INS of its patient).

import { ALLERGIES, accessible, check, closeSummary, context, countCalls, env, finish, launch, openSummary, setup, unlock } from './common.mjs';

const { gateway, shots } = setup();
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway, { viewport: { width: 1280, height: 900 } })).newPage();
  // Keep a hand on the page's event stream, to replay what a coalesced card swap looks
  // like (the page's own code is unchanged: this wraps the browser's EventSource).
  await page.addInitScript(() => {
    const Original = window.EventSource;
    window.__deskEvents = [];
    window.EventSource = function (url, options) {
      const source = new Original(url, options);
      window.__deskSource = source;
      source.addEventListener('desk', (event) => window.__deskEvents.push(JSON.parse(event.data)));
      return source;
    };
  });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await unlock(page, gateway);

  const open = (ins) => openSummary(page, ins, 'CRRA-2026-000077');
  const close = () => closeSummary(page);

  // The penicillin allergy sharing its fullUrl with "no known allergies": never hidden.
  let blocks = await open(env('CONFLICT_INS'));
  let allergies = blocks[ALLERGIES];
  check(allergies.includes('Document contradictoire'), `contradiction said: ${allergies}`);
  check(/Penicillin allergy/.test(allergies) && allergies.includes('CRITICITÉ HAUTE'), `the allergy is shown: ${allergies}`);
  check(!allergies.includes('Aucune allergie connue'), 'never "aucune allergie connue"');
  check(allergies.includes('entrées en double (1)'), `duplicates said: ${allergies}`);
  check(allergies.includes('« No known allergy (situation) »'), `the statement is listed: ${allergies}`);
  check(allergies.includes('1 entrée(s) illisible(s)'), `unreadable entries said: ${allergies}`);
  check((await page.locator('#summary .partial').textContent()).includes('partielle'), 'partial summary flagged');
  result.conflict = allergies;
  await page.screenshot({ path: `${shots}/5b-allergies-contradictoires.png`, fullPage: true });
  await accessible(page, 'conflicting allergies');
  // The same session announced again: the summary stays. Another session (a card swap
  // whose removal and new login reached the page as one event): it leaves at once.
  const replay = (epochShift) => page.evaluate((shift) => {
    const last = window.__deskEvents[window.__deskEvents.length - 1];
    const data = JSON.stringify({ ...last, epoch: last.epoch + shift });
    window.__deskSource.dispatchEvent(new MessageEvent('desk', { data }));
  }, epochShift);
  // The event makes the page ask the desk again: the check waits until it has handled
  // that answer (which leaves no trace when the session is the same).
  const deskCalls = await countCalls(page, '/api/v1/desk');
  await replay(0);
  await deskCalls.settled(1);
  check(await page.locator('#summary').evaluate((s) => s.childElementCount > 0), 'same session: the summary stays');
  await replay(1);
  await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0, null, { timeout: 2000 });
  result.epochCleared = true;
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  // The page has handled its desk answer to that event before the form is typed in: a
  // late one re-rendering the screen mid-typing left the access unsent once under the
  // whole suite's load (no break-glass request within 30 s).
  await deskCalls.settled(2);

  // Family members: their entries left out, counted in the blocks concerned.
  const granted = page.waitForResponse((r) => r.url().endsWith('/api/v1/break-glass'));
  blocks = await open(env('FAMILY_INS'));
  allergies = blocks[ALLERGIES];
  check(allergies.includes('2 entrée(s) concernant une autre personne ignorée(s)'), `excluded allergies: ${allergies}`);
  check(!/shellfish|egg/i.test(allergies) && /Penicillin allergy/.test(allergies), `only the patient's: ${allergies}`);
  check(blocks['Problèmes actifs'].includes('1 entrée(s) concernant une autre personne ignorée(s)'),
    `excluded problem: ${blocks['Problèmes actifs']}`);
  check(!blocks['Problèmes actifs'].includes('Diabète'), 'the mother\u2019s problem is not shown');
  result.family = allergies;

  // The gateway fails an answer about the desk for a moment: the summary leaves the screen
  // (fail closed), and the grant it was shown under is ended on the record once the
  // gateway answers again, not left open there until it expires.
  const grantPath = '/api/v1/grants/' + encodeURIComponent((await (await granted).json()).grant.id);
  // The desk's own session announced again (the events replayed above carry a shifted
  // one, which would clear the page as another session, not as a failed answer).
  const epoch = await page.evaluate(async () => (await (await fetch('/api/v1/desk')).json()).session_epoch);
  check(Number.isInteger(epoch), `the desk names its session: ${epoch}`);
  const announce = () => page.evaluate((epoch) => {
    const last = window.__deskEvents[window.__deskEvents.length - 1];
    window.__deskSource.dispatchEvent(new MessageEvent('desk', { data: JSON.stringify({ ...last, epoch }) }));
  }, epoch);
  const ends = await countCalls(page, grantPath);
  await page.route('**/api/v1/desk', (route) => route.fulfill({
    status: 503,
    contentType: 'application/json',
    body: JSON.stringify({ error: 'unavailable', message: 'unavailable', message_fr: 'Service momentanément indisponible.' }),
  }));
  const failing = await countCalls(page, '/api/v1/desk');
  await announce();
  await failing.settled(1);
  await page.locator('#screen-card').waitFor({ state: 'visible' });
  check(await page.locator('#summary').evaluate((s) => s.childElementCount === 0), 'a failed answer about the desk masks the summary');
  check((await page.locator('#card-title').textContent()) === 'Serveur injoignable', 'the card screen says the server is out of reach');
  check(await ends.asked() === 0, 'the grant is not ended while the gateway fails');
  await page.unroute('**/api/v1/desk');
  const ended = page.waitForResponse((r) => r.request().method() === 'DELETE' && new URL(r.url()).pathname === grantPath);
  await announce();
  check((await ended).status() === 204, 'the masked grant is ended on the record once the gateway answers');
  await page.locator('#screen-patient').waitFor({ state: 'visible' });
  check(await page.locator('#summary').evaluate((s) => s.childElementCount === 0), 'the summary does not come back');
  result.maskedGrantEnded = true;

  // An allergy the section does not list, next to its "none known": shown, marked.
  blocks = await open(env('UNLISTED_INS'));
  allergies = blocks[ALLERGIES];
  check(/Allergy to peanut/.test(allergies) && allergies.includes('non listée dans la section allergies'),
    `unlisted allergy shown: ${allergies}`);
  check(allergies.includes('Document contradictoire') && !allergies.includes('Aucune allergie connue'), allergies);
  await close();

  // A problem list naming a version the document does not hold: unreadable, in its block.
  blocks = await open(env('VERSIONED_INS'));
  check(blocks['Problèmes actifs'].includes('Présent dans le document mais illisible'), blocks['Problèmes actifs']);
  check(/Allergy to aspirin/.test(blocks[ALLERGIES]) && blocks[ALLERGIES].includes('CRITICITÉ HAUTE'),
    `version 2 (high criticality): ${blocks[ALLERGIES]}`);
  await close();

  // "No known allergies" and "no information" together: unknown, not none.
  blocks = await open(env('CONTRADICTION_INS'));
  allergies = blocks[ALLERGIES];
  check(allergies.includes('Statut allergique inconnu') && !allergies.includes('Aucune allergie connue'), allergies);
  check(allergies.includes('« No information about allergies »'), allergies);
  check(await page.locator('#summary .no-ins').count() === 0, 'a document naming the INS asks for no check');
  await close();

  // A document naming no INS: the physician is asked to check the identity with the
  // caller, beside the traits the document gives.
  blocks = await open(env('NO_INS_INS'));
  // Statuses that change what an entry means are shown with it.
  check(blocks['Problèmes actifs'].includes('diagnostic provisoire'), blocks['Problèmes actifs']);
  check(blocks['Actes et interventions'].includes('ARRÊTÉ'), blocks['Actes et interventions']);
  check(blocks['Traitements en cours'].includes('NE PAS ADMINISTRER'), blocks['Traitements en cours']);
  const noIns = await page.locator('#summary .no-ins').textContent();
  check(noIns.includes('ne porte pas l\u2019INS') && noIns.includes('date de naissance'), `identity check asked: ${noIns}`);
  result.noIns = noIns;
  await page.screenshot({ path: `${shots}/5c-document-sans-ins.png`, fullPage: true });
  // The desk's own answer names another session than the page's (its event not come
  // yet): the summary leaves all the same.
  await page.route('**/api/v1/desk', async (route) => {
    const response = await route.fetch();
    const json = await response.json();
    json.session_epoch += 1;
    await route.fulfill({ response, json });
  });
  await replay(0);
  await page.waitForFunction(() => document.querySelector('#summary').childElementCount === 0, null, { timeout: 5000 });
  check(!(await page.locator('#screen-summary').isVisible()), 'another session by the desk’s answer: the summary left');
  // Once every answer it holds is given (the page may ask twice: the event, its check).
  await page.unrouteAll({ behavior: 'wait' });

  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

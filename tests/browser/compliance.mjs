// The compliance view in Debian's Chromium, driven by Playwright, with an officer's
// certificate. Started by tests/suite/browser.rs on a gateway whose trail holds two
// break-glass accesses (calls CRRA-1 and CRRA-2).
// Environment: GATEWAY, CLIENT_CERT / CLIENT_KEY (the officer's), SHOTS.

import { accessible, check, context, env, finish, launch, setup } from './common.mjs';

const { gateway, shots } = setup();

const browser = await launch();
const result = {};
try {
  // A centre's workstation in France, whatever zone the test machine is in.
  const page = await (await context(browser, gateway, { viewport: { width: 1280, height: 900 }, timezoneId: 'Europe/Paris' })).newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  // An officer who opens the desks' page is pointed to their own.
  await page.goto(gateway + '/');
  await page.locator('#compliance-link').waitFor({ state: 'visible' });
  await page.locator('#compliance-link a').click();
  await page.waitForURL(gateway + '/conformite');
  const rows = page.locator('#accesses tbody tr');
  await rows.first().waitFor();
  check((await rows.count()) === 2, 'two accesses to review');
  // The times are the workstation's, and the page says which zone that is.
  const zone = await page.locator('#zone').textContent();
  check(zone.includes('Europe/Paris') && /UTC\+0[12]:00/.test(zone), `the zone: ${zone}`);
  // The trail was restored once (tests/suite/browser.rs): said, with what it lacks.
  const restored = await page.locator('#restores').textContent();
  check(await page.locator('#restores').isVisible() && restored.includes('restaurée depuis une sauvegarde') &&
    restored.includes('jusqu\u2019à l\u2019enregistrement n° 3'), `the restore: ${restored}`);

  // Filters narrow the list without another request.
  await page.locator('#filter-text').fill('CRRA-2');
  check((await rows.count()) === 1, 'the filter keeps one access');
  check((await page.locator('#count').textContent()).includes('1 accès affichés sur 2'), 'the count says so');
  await page.locator('#filter-text').fill('');

  // An access's trail, then a decision: it leaves the list.
  await page.locator('#accesses tbody tr').first().getByRole('button').click();
  await page.locator('#detail').waitFor({ state: 'visible' });
  const trail = await page.locator('#trail').textContent();
  check(trail.includes('Début de l’accès') && trail.includes('Connexion par carte'), `the trail: ${trail}`);
  await accessible(page, 'compliance');
  await page.screenshot({ path: `${shots}/8-conformite.png`, fullPage: true });
  // The whole trail downloads as a file that verifies offline (tests/suite/browser.rs checks).
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#export').click(),
  ]);
  check(download.suggestedFilename().endsWith('.jsonl'), `file name: ${download.suggestedFilename()}`);
  // The browser's own download fetched it from its one-use link (not a blob the page
  // filled in memory).
  check(/\/api\/v1\/compliance\/downloads\/[0-9a-f]{32}$/.test(download.url()), `downloaded from: ${download.url()}`);
  await download.saveAs(env('EXPORT'));
  await page.getByLabel('Justifié', { exact: true }).check();
  await page.locator('#comment').fill('Arrêt cardio-respiratoire, appel vérifié.');
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await page.locator('#detail').waitFor({ state: 'hidden' });
  await page.waitForFunction(() => document.querySelectorAll('#accesses tbody tr').length === 1);
  result.left = await rows.count();
  // « À investiguer » keeps the other access in the list; its trail says who decided.
  await page.locator('#accesses tbody tr').first().getByRole('button').click();
  await page.locator('#detail').waitFor({ state: 'visible' });
  await page.getByLabel('À investiguer', { exact: true }).check();
  await page.locator('#comment').fill('Appel à réécouter.');
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await page.locator('#detail').waitFor({ state: 'hidden' });
  await page.locator('#accesses tbody tr').first().getByRole('button').click();
  await page.locator('#detail').waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#trail').textContent.includes('À investiguer'));
  const decided = await page.locator('#trail').textContent();
  check(decided.includes('À investiguer par poste-x : Appel à réécouter.'), `who decided: ${decided}`);
  // A decision on an access already decided says it replaces that one.
  const hint = await page.locator('#replaces').textContent();
  check(await page.locator('#replaces').isVisible() && hint.includes('« À investiguer » par poste-x'), `the hint: ${hint}`);

  // Another officer decides meanwhile: this page's decision is not recorded over theirs
  // unseen. Theirs is shown, what was typed is kept, and a second click replaces it.
  await page.evaluate(async () => {
    const { api } = window.samuPage;
    const access = (await api('GET', '/api/v1/compliance/pending')).data.accesses[0];
    const answer = await api('POST', '/api/v1/compliance/reviews', {
      seq: access.seq, decision: 'to_investigate', comment: 'Second avis demandé.', replaces: access.last_decision_seq,
    });
    if (answer.status !== 201) throw new Error('the other decision: ' + answer.status);
  });
  await page.getByLabel('Injustifié', { exact: true }).check();
  await page.locator('#comment').fill('Aucun appel ne correspond.');
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await page.waitForFunction(() => document.querySelector('#message').textContent.includes('entre-temps'));
  check(await page.locator('#detail').isVisible(), 'the access stays shown');
  await page.waitForFunction(() => document.querySelector('#trail').textContent.includes('Second avis demandé.'));
  check(await page.getByLabel('Injustifié', { exact: true }).isChecked(), 'the choice is kept');
  check((await page.locator('#comment').inputValue()) === 'Aucun appel ne correspond.', 'the comment is kept');
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await page.locator('#detail').waitFor({ state: 'hidden' });
  await page.waitForFunction(() => document.querySelectorAll('#accesses tbody tr').length === 0);

  // The recent decisions, newest first, find a closed access again; the replaced ones say so.
  const decisions = page.locator('#decisions tbody tr');
  await page.waitForFunction(() => document.querySelectorAll('#decisions tbody tr').length === 4);
  const newest = await decisions.first().textContent();
  check(newest.includes('Injustifié') && newest.includes('Aucun appel ne correspond.'), `newest: ${newest}`);
  const listed = await page.locator('#decisions tbody').textContent();
  check((listed.match(/remplacée par n°/g) || []).length === 2, `replaced ones: ${listed}`);
  await decisions.filter({ hasText: 'Justifié' }).filter({ hasNotText: 'Injustifié' }).getByRole('button').click();
  await page.locator('#detail').waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#detail-facts').textContent.includes('« Justifié » par poste-x'));
  check(await page.locator('#replaces').isVisible(), 'a closed access may have its decision replaced');
  await accessible(page, 'compliance decisions');

  // A decision on its way while the officer opens another access: its answer neither
  // hides the access now shown nor fills it with what was typed for the first.
  const firstTitle = await page.locator('#detail-title').textContent();
  let releaseDecision = null;
  const held = new Promise((resolve) => { releaseDecision = resolve; });
  await page.route('**/api/v1/compliance/reviews', async (route) => { await held; await route.continue(); });
  await page.getByLabel('À investiguer', { exact: true }).check();
  await page.locator('#comment').fill('Réexamen demandé.');
  const recorded = page.waitForResponse((r) => r.url().endsWith('/api/v1/compliance/reviews'));
  await page.getByRole('button', { name: 'Enregistrer la décision' }).click();
  await decisions.filter({ hasText: 'Aucun appel ne correspond.' }).getByRole('button').click();
  await page.waitForFunction((before) => document.querySelector('#detail-title').textContent !== before, firstTitle);
  const otherTitle = await page.locator('#detail-title').textContent();
  releaseDecision();
  check((await recorded).status() === 201, 'the first access\u2019s decision is recorded');
  await page.waitForFunction(() => document.querySelectorAll('#accesses tbody tr').length === 1);
  check(await page.locator('#detail').isVisible(), 'the access opened since stays shown');
  check((await page.locator('#detail-title').textContent()) === otherTitle, 'it is still the one opened since');
  check((await page.locator('#comment').inputValue()) === '', 'nothing typed for the first is carried over');
  await page.unroute('**/api/v1/compliance/reviews');
  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

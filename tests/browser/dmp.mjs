// The physician's page on the national record's path: the summary composed from the
// record's CDA documents (allergies first), the reimbursement history's dispensations
// apart, and the record's documents listed with what each block came from; the others
// opened below the list (a discharge letter in its blocks, a scanned letter's PDF in the
// browser's own viewer). Started by tests/suite/browser.rs with the gateway on the DMP
// path, the virtual card signing the assertions and dev-dmp. Environment: GATEWAY,
// CLIENT_CERT, CLIENT_KEY, SHOTS, INS.

import { ALLERGIES, accessible, check, closeSummary, context, env, finish, launch, openSummary, setup, unlock } from './common.mjs';

const { gateway, shots } = setup();
const browser = await launch();
const result = {};
try {
  // The centre's workstations run on Paris time: the registry's UTC dates are shown as
  // the day they were there.
  const ctx = await context(browser, gateway, { viewport: { width: 1280, height: 900 }, timezoneId: 'Europe/Paris' });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await unlock(page, gateway);
  const blocks = await openSummary(page, env('INS'), 'CRRA-2026-001818');
  check(blocks[ALLERGIES].includes('Pénicilline') && blocks[ALLERGIES].includes('CRITICITÉ HAUTE'), blocks[ALLERGIES]);
  const dispensed = blocks['Délivrances récentes (remboursements)'];
  check(dispensed && dispensed.includes('ce n\u2019est pas le traitement en cours'), `dispensations: ${dispensed}`);
  // The history names no INS (the test's): said in its block, with what to do.
  check(dispensed.includes('Historique sans INS') && dispensed.includes('vérifiez l\u2019identité'), `unverified dispensations: ${dispensed}`);
  // Handed out at 23:15 UTC on the 11th: the 12th in Paris.
  check(dispensed.includes('PARACÉTAMOL 1 g, comprimé — délivré le 12/10/2026'), `a dispensation's day: ${dispensed}`);
  const documents = blocks['Documents du dossier'];
  check(documents && documents.includes('Synthèse médicale') && documents.includes('source de cette synthèse'), `documents: ${documents}`);
  check(documents.includes('Historique des remboursements') && documents.includes('source des délivrances'), `documents: ${documents}`);
  // Written 23:30 UTC on the 18th: the 19th in Paris.
  check(documents.includes('Lettre de liaison de sortie — du 19 novembre 2026'), `documents: ${documents}`);
  // The discharge letter (older) and the scanned one are syntheses the summary does not
  // take from: the physician is told they exist.
  const others = await page.locator('#summary p.other-syntheses').innerText();
  check(others.includes('2 autres synthèses'), `other syntheses: ${others}`);
  const last = await page.locator('#summary > section').last().getAttribute('class');
  check(last.includes('documents'), 'the documents come last');
  result.documents = documents;
  await page.screenshot({ path: `${shots}/9c-dmp-documents.png`, fullPage: true });
  await accessible(page, 'DMP summary');

  // The discharge letter, opened by keyboard: its own blocks under its own heading, the
  // summary above unchanged.
  const opener = (title) => page.locator('#summary .documents li', { hasText: title }).locator('button.open-listed');
  check(await page.locator('#summary .documents li.used button').count() === 0, 'the sources have no button');
  await opener('Lettre de liaison de sortie').focus();
  await page.keyboard.press('Enter');
  const opened = page.locator('#opened-document');
  await opened.locator('h2', { hasText: 'Document ouvert' }).waitFor();
  const letter = await opened.innerText();
  check(letter.includes('Lettre de liaison de sortie') && letter.includes('APIXABAN'), `letter: ${letter}`);
  check(await page.evaluate(() => document.activeElement.textContent.startsWith('Document ouvert')), 'focus on the opened document');
  const summaryAllergies = await page.locator('#summary > section.allergies').innerText();
  check(summaryAllergies.includes('Pénicilline'), 'the summary stays');
  await page.screenshot({ path: `${shots}/9d-dmp-document-ouvert.png`, fullPage: true });
  await accessible(page, 'opened listed document');
  await opened.locator('button.close-listed').click();
  check((await opened.innerText()).trim() === '', 'closed');

  // The scanned letter: a PDF, opened in the viewer under the grant, by its own route.
  await opener('Lettre de liaison (scannée)').click();
  const link = opened.locator('a.open-document');
  await link.waitFor();
  const href = await link.getAttribute('href');
  check(/^\/api\/v1\/grants\/[0-9a-f]{32}\/documents\/1\.2\.250\.1\.999\.1\.5\/pdf$/.test(href), href);
  const answered = ctx.waitForEvent('response', (r) => r.url().endsWith('/pdf'));
  const newTab = ctx.waitForEvent('page');
  await link.click();
  const tab = await newTab;
  const response = await answered;
  const headers = await response.allHeaders();
  check(response.status() === 200 && headers['content-type'] === 'application/pdf', `${response.status()} ${headers['content-type']}`);
  check(headers['content-security-policy'].includes("object-src 'self'"), headers['content-security-policy']);
  check(tab !== page && !tab.isClosed(), 'the PDF in a tab of its own');
  // A middle click opens it as the page's own tab too (the browser's would outlive it).
  const middleTab = ctx.waitForEvent('page');
  await link.click({ button: 'middle' });
  const middle = await middleTab;
  // Closing the access closes the document's tabs with the rest of the patient's data.
  await closeSummary(page);
  for (let i = 0; i < 50 && !(tab.isClosed() && middle.isClosed()); i += 1) await page.waitForTimeout(100);
  check(tab.isClosed(), 'the PDF tab closed with the access');
  check(middle.isClosed(), 'the tab a middle click opened closed with the access');
  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

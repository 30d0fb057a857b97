// The physician's page on the national record's path: the summary composed from the
// record's CDA documents (allergies first), the reimbursement history's dispensations
// apart, and the record's documents listed with what each block came from. Started by
// tests/suite/browser.rs with the gateway on the DMP path, the virtual card signing the
// assertions and dev-dmp. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, SHOTS, INS.

import { ALLERGIES, accessible, check, closeSummary, context, env, finish, launch, openSummary, setup, unlock } from './common.mjs';

const { gateway, shots } = setup();
const browser = await launch();
const result = {};
try {
  const page = await (await context(browser, gateway, { viewport: { width: 1280, height: 900 } })).newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await unlock(page, gateway);
  const blocks = await openSummary(page, env('INS'), 'CRRA-2026-001818');
  check(blocks[ALLERGIES].includes('Pénicilline') && blocks[ALLERGIES].includes('CRITICITÉ HAUTE'), blocks[ALLERGIES]);
  const dispensed = blocks['Délivrances récentes (remboursements)'];
  check(dispensed && dispensed.includes('ce n\u2019est pas le traitement en cours'), `dispensations: ${dispensed}`);
  const documents = blocks['Documents du dossier'];
  check(documents && documents.includes('Synthèse médicale') && documents.includes('source de cette synthèse'), `documents: ${documents}`);
  check(documents.includes('Historique des remboursements') && documents.includes('source des délivrances'), `documents: ${documents}`);
  const last = await page.locator('#summary > section').last().getAttribute('class');
  check(last.includes('documents'), 'the documents come last');
  result.documents = documents;
  await page.screenshot({ path: `${shots}/9c-dmp-documents.png`, fullPage: true });
  await accessible(page, 'DMP summary');
  await closeSummary(page);
  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

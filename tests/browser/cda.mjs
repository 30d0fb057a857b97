// The record's CDA documents on the physician's page: an IPS-FR summary read into the
// same blocks as a bundle (allergies first), a reimbursement history's dispensations
// never shown as the current treatment, and summaries held only as a PDF or a text (CDA
// level 1): the text inline, the PDF opened in the browser's own viewer under the grant.
// Started by tests/suite/browser.rs with the gateway, the virtual card and the dev
// upstream. Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, SHOTS, and one INS per
// document: CDA_INS, HR_INS, PDF_INS, TEXT_INS, LONG_INS (the IPS-FR with a vigilance text
// too long to keep whole).

import { ALLERGIES, accessible, check, closeSummary, context, env, finish, launch, openSummary, setup, unlock } from './common.mjs';

const { gateway, shots } = setup();
const browser = await launch();
const result = {};
try {
  const ctx = await context(browser, gateway, { viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await unlock(page, gateway);

  const open = (ins) => openSummary(page, ins, 'CRRA-2026-000117');
  const close = () => closeSummary(page);

  // IPS-FR: the allergy with its criticality and reaction, the drug, the problem; the
  // header says what the document is and who wrote it.
  let blocks = await open(env('CDA_INS'));
  const source = await page.locator('#summary .source').textContent();
  check(source.includes('Synthèse médicale (synthétique)') && source.includes('20 novembre 2026'), `header: ${source}`);
  check(source.includes('Jeanne TRAITANTE') && source.includes('synthèse médicale (IPS-FR)'), `header: ${source}`);
  check(blocks[ALLERGIES].includes('Pénicilline') && blocks[ALLERGIES].includes('CRITICITÉ HAUTE'), blocks[ALLERGIES]);
  check(blocks[ALLERGIES].includes('Urticaire'), `reaction: ${blocks[ALLERGIES]}`);
  // The section's own text too, though every entry read: it may name what they do not.
  check(blocks[ALLERGIES].includes('Texte de la section dans le document'), `text: ${blocks[ALLERGIES]}`);
  check(blocks['Traitements en cours'].includes('ELIQUIS 5 mg'), blocks['Traitements en cours']);
  // The section's text beside its coded entries, as the allergies': it may name a drug the
  // entries leave out.
  check(blocks['Traitements en cours'].includes('Apixaban 5 mg matin et soir'), `treatments text: ${blocks['Traitements en cours']}`);
  check(blocks['Problèmes actifs'].includes('Fibrillation et flutter auriculaires'), blocks['Problèmes actifs']);
  // Points of vigilance held only as text: the text, and no "not recorded" above it.
  const vigilance = blocks['Points de vigilance'];
  check(vigilance.includes('Patiente sous anticoagulant') && !vigilance.includes('Non renseigné'), vigilance);
  check(!Object.values(blocks).some((b) => b.includes('Texte coupé')), 'no text cut in the IPS-FR');
  result.cda = blocks[ALLERGIES];
  await page.screenshot({ path: `${shots}/9-synthese-cda.png`, fullPage: true });
  await accessible(page, 'CDA summary');
  await close();

  // A text too long to keep whole: its beginning, then a warning that the rest (here, an
  // allergy) is not shown; a long text ending in « … » reads as whole.
  blocks = await open(env('LONG_INS'));
  const long = blocks['Points de vigilance'];
  check(long.includes('Antécédent ancien sans suite.') && !long.includes('latex'), `long text: ${long.slice(0, 200)}`);
  check(long.includes('Texte coupé') && long.includes('La suite n\u2019est pas affichée'), `cut warning: ${long.slice(-400)}`);
  await close();

  // A reimbursement history: what pharmacies dispensed, with dates, never the treatment.
  blocks = await open(env('HR_INS'));
  const dispensed = blocks['Délivrances récentes (remboursements)'];
  check(dispensed && dispensed.includes('ce n\u2019est pas le traitement en cours'), `dispensations: ${dispensed}`);
  check(/délivré le \d{2}\/\d{2}\/\d{4}/.test(dispensed), `dates: ${dispensed}`);
  // The fixture's first dispensed drug: listed as dispensed, never as a current treatment.
  check(dispensed.includes('METFORMINE 1000 mg'), `the dispensed drug: ${dispensed}`);
  check(!blocks['Traitements en cours'].includes('METFORMINE'), `not listed as treatment: ${blocks['Traitements en cours']}`);
  result.hr = dispensed;
  await close();

  // A summary held only as a PDF: said so in the allergy block, opened under the grant.
  blocks = await open(env('PDF_INS'));
  check(blocks[ALLERGIES].includes('Document non structuré'), blocks[ALLERGIES]);
  const link = page.locator('#summary a.open-document');
  check(await link.getAttribute('target') === '_blank', 'a new tab: the browser\u2019s own viewer');
  const href = await link.getAttribute('href');
  check(/^\/api\/v1\/grants\/[0-9a-f]{32}\/document$/.test(href), href);
  await page.screenshot({ path: `${shots}/9b-document-pdf.png`, fullPage: true });
  await accessible(page, 'unstructured PDF');
  // The page's own policy is unchanged by the PDF's.
  const pageCsp = await page.evaluate(async () => (await fetch('/')).headers.get('content-security-policy'));
  check(pageCsp.includes("script-src 'self'") && !pageCsp.includes('object-src'), pageCsp);
  // The tab opened by the link gets the PDF (headless Chromium may hand it to a download
  // rather than render it: the answer is what is checked).
  const answered = ctx.waitForEvent('response', (r) => r.url().endsWith('/document'));
  await link.click();
  const response = await answered;
  // allHeaders: headers() leaves out security headers Chromium rewrites.
  const headers = await response.allHeaders();
  check(response.status() === 200, `status ${response.status()}`);
  check(headers['content-type'] === 'application/pdf', headers['content-type']);
  check(headers['cache-control'] === 'no-store', headers['cache-control']);
  check(headers['content-security-policy'].includes("object-src 'self'"), headers['content-security-policy']);
  // Chromium renders it in its own viewer: what the tab holds is the viewer's wrapper
  // around the PDF, which the document's policy lets in (inline styles, an embed).
  const body = (await response.body()).toString('latin1');
  check(body.startsWith('%PDF-') || body.includes('application/pdf'), `viewer: ${body.slice(0, 120)}`);
  // The bytes themselves, fetched again under the same grant: a second release, recorded.
  const magic = await page.evaluate(async (url) => {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    return String.fromCharCode(...bytes.slice(0, 5));
  }, href);
  check(magic === '%PDF-', `PDF bytes: ${magic}`);
  result.pdf = { status: response.status(), type: headers['content-type'] };
  for (const other of ctx.pages()) if (other !== page) await other.close();
  await close();

  // A summary held only as text: shown inline, as written.
  blocks = await open(env('TEXT_INS'));
  const text = blocks['Document non structuré'];
  check(text && text.includes('Allergie : pénicilline. Traitement : apixaban.'), `inline text: ${text}`);
  await accessible(page, 'unstructured text');
  await close();

  check(errors.length === 0, `no script error: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
finish(result);

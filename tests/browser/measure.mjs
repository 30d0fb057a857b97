// The physician's flow measured in Debian's Chromium (benches/page.rs drives it): for each
// run, from card insertion to the allergies on screen, the user's actions and the system
// time (what the physician waits for; their typing is excluded).
// An action is one task the physician does with a single aim, as the issue that asked for
// the case path counts them: insert the card; type the PIN; identify the patient (type
// the INS and the call id); justify (choose the reason) and send. Reading the allergies is
// where the count stops. On the case's path, identifying is choosing a candidate inside
// the justifying action: nothing is typed.
//
// Protocol with benches/page.rs: this script prints "INSERT" (the card goes into the
// reader) and "REMOVE" (it leaves); the bench answers "done" to each.
// Environment: GATEWAY, CLIENT_CERT, CLIENT_KEY, RUNS, INS_LIST (comma-separated: one
// patient per run, so that every run asks the record service); CASE_ID when the desk holds
// a case from the regulation software: the identification is then the case's path
// (reason, candidate, Enter) instead of typing the INS and the call id.

import { ask, context, env, fillAccessForm, finish, launch } from './common.mjs';

const gateway = env('GATEWAY');
const runs = Number(env('RUNS'));
const patients = env('INS_LIST').split(',');
const caseId = process.env.CASE_ID;
const browser = await launch();
const page = await (await context(browser, gateway)).newPage();
await page.goto(gateway + '/');
await page.locator('#card-title').filter({ hasText: 'Insérez votre carte' }).waitFor();

const samples = [];
for (let run = 0; run < runs; run++) {
  let waited = 0;
  let actions = 0;
  let keys = 0;
  const segments = {};
  const timed = async (name, step) => {
    const started = performance.now();
    await step();
    segments[name] = performance.now() - started;
    waited += segments[name];
  };
  // Action 1: insert the card. Waiting: until the PIN field is there.
  actions++;
  await timed('card', async () => {
    await ask('INSERT');
    await page.locator('#pin').waitFor({ state: 'visible' });
  });
  // Action 2: PIN + Enter (typing excluded). Waiting: until the INS field is there.
  actions++;
  await page.keyboard.type('1234');
  keys++;
  await timed('login', async () => {
    await page.keyboard.press('Enter');
    await page.locator('#screen-patient').waitFor({ state: 'visible' });
  });
  if (caseId) {
    // Action 3, the case's path: the reason (↓), the candidate it finds (Enter), Enter.
    // Waiting: the case shown, the candidates found, then the allergies.
    actions++;
    await timed('case', () => page.locator('#case').waitFor({ state: 'visible' }));
    await page.keyboard.press('ArrowDown');
    keys += 1;
    await timed('candidates', () =>
      page.locator('#case-candidates-0 button:not([disabled])').first().waitFor({ state: 'visible' }));
    await page.keyboard.press('Enter');
    keys += 1;
    await page.locator('#ins-check.ok').waitFor();
    await timed('access', async () => {
      await page.keyboard.press('Enter');
      await page.locator('#summary .allergies').waitFor({ state: 'visible' });
    });
  } else {
    // Action 3: identify (INS, call id); action 4: justify (reason) and Enter (typing
    // excluded). Waiting: until the allergies.
    actions += 2;
    // (↓ for the test identifier kind is not needed for a real INS.)
    await fillAccessForm(page, patients[run % patients.length], `CRRA-2026-${String(run).padStart(6, '0')}`);
    keys += 6;
    await timed('access', async () => {
      await page.keyboard.press('Enter');
      await page.locator('#summary .allergies').waitFor({ state: 'visible' });
    });
  }
  samples.push({ waited, actions, keys, ...segments });
  await ask('REMOVE');
  await page.locator('#card-title').filter({ hasText: 'Insérez votre carte' }).waitFor();
}
await browser.close();
finish(samples);

// The physician's page. No framework, nothing from outside the gateway, no inline code
// (the Content-Security-Policy forbids it). Patient data lives only in this page's DOM
// and variables: never in a URL, never in storage, and it is removed the moment the
// gateway says the session ended.
'use strict';

(() => {
  const { $, api, fetchToken, refusal, message, element } = window.samuPage;
  // pinpadFor: the card (certificate digest) whose PIN-pad entry this page has started.
  // cleared: bumped at every clearing, so that an answer asked for before it is dropped.
  // case: the case the regulation software sent this desk (its patients' traits: patient
  // data like the rest); caseSearched: its candidates were asked for.
  const state = {
    desk: null, grant: null, countdown: null, formReady: false, pinpadFor: null, cleared: 0,
    case: null, caseSearched: false, caseFound: new Set(),
    // Grants masked while the link was down, to end once it is back.
    unended: [],
    // following: the desk's event stream is open and has told the desk's state (a summary
    // or a case is shown only while it is; both leave when it breaks); onFollowing: who
    // waits for it; accessOnItsWay: an access was asked for and its answer has not come.
    following: false, onFollowing: [], accessOnItsWay: false,
    // deskAsked: how many times the desk was asked for (the last answer asked wins);
    // searches, documentsAsked: the same for trait searches and a listed document.
    deskAsked: 0, searches: 0, documentsAsked: 0,
    // insFromCase: the INS filled in from the case (a candidate's, or its NIR copied;
    // leaves with the case).
    insFromCase: null,
    // caseId: the case the desk's events last announced (none: null).
    caseId: null,
    // Tabs the page opened on a patient's document (a PDF): closed with the patient data.
    tabs: [],
  };

  // ---- Screens ----------------------------------------------------------------------

  function show(screen) {
    for (const name of ['card', 'patient', 'summary']) {
      $('screen-' + name).hidden = name !== screen;
    }
  }

  // Removes every patient datum from the page: called at session end, grant end, close.
  function clearPatientData() {
    state.cleared += 1;
    for (const tab of state.tabs.splice(0)) tab.close();
    state.grant = null;
    if (state.countdown) clearInterval(state.countdown);
    state.countdown = null;
    $('summary').replaceChildren();
    $('grant-banner').replaceChildren();
    $('grant-said').textContent = '';
    $('stale-banner').replaceChildren();
    $('stale-banner').hidden = true;
    $('access-form').reset();
    $('candidates').replaceChildren();
    $('traits').hidden = true;
    $('ins-check').textContent = '';
    $('ins-check').className = 'check';
    clearCase();
  }

  // An INS as typed, spacing and case aside: what says two are the same number.
  const bare = (v) => v.replace(/\s+/g, '').toUpperCase();

  // Removes the case from the page (it was closed or replaced, or the session ended).
  function clearCase() {
    // The case's id filled in for it goes with it: the next call is not recorded under it.
    if (state.case && $('call-id').value.trim() === state.case.case_id) $('call-id').value = '';
    // So does an INS chosen among the case's candidates or copied from its NIR: the case
    // corrected or closed, it may be another patient's (compared as typed: spacing aside).
    if (state.insFromCase && bare($('ins').value) === bare(state.insFromCase)) {
      $('ins').value = '';
      $('ins-check').textContent = '';
      $('ins-check').className = 'check';
    }
    state.insFromCase = null;
    state.case = null;
    state.caseSearched = false;
    state.caseFound = new Set();
    $('case').hidden = true;
    $('case-head').replaceChildren();
    $('case-hint').replaceChildren();
    $('case-patients').replaceChildren();
  }

  // ---- Desk, card and session -------------------------------------------------------

  const OTHER_SESSION = 'Une autre session a commencé sur ce poste : la synthèse précédente a été masquée.';

  async function refreshDesk() {
    // Asked from the events, the periodic check and a login, answers can cross: only the
    // last one asked is shown (an older one could show a session the card has left).
    const asked = ++state.deskAsked;
    const answer = await api('GET', '/api/v1/desk');
    if (asked !== state.deskAsked) return;
    state.deskStatus = answer.status;
    if (answer.status !== 200) {
      // Fail closed: the card screen never hides patient data still held (a grant whose
      // countdown would later reset the form, a summary shown again by the next answer).
      // A grant masked so is ended on the record once the gateway answers again, as one
      // masked for a lost stream is: it must not stay open there until it expires.
      if (state.grant) state.unended.push(state.grant.id);
      clearPatientData();
      show('card');
      // Only a refusal says the workstation is not a desk: a gateway out of reach (0) or
      // failing (5xx) says nothing of it.
      $('card-title').textContent = answer.status === 0 || answer.status >= 500
        ? 'Serveur injoignable' : 'Poste non reconnu';
      $('card-detail').textContent = refusal(answer);
      // A compliance officer's certificate is no desk: their page is elsewhere.
      $('compliance-link').hidden = answer.status !== 403;
      return;
    }
    renderDesk(answer.data);
    // The gateway answers again: grants masked meanwhile are ended now.
    if (state.unended.length) endMaskedGrants();
  }

  function renderDesk(desk) {
    // The desk names another session than the one the page shows data under (its event
    // not come yet, or the stream silent): the data leaves now, as for the event.
    if (state.epoch !== undefined && desk.session_epoch != null && desk.session_epoch !== state.epoch) {
      // Said only when a summary was there to mask (a login after a pull whose event is
      // late has nothing to hide).
      const masked = Boolean(state.grant) || !$('screen-summary').hidden;
      if (state.grant) state.unended.push(state.grant.id);
      clearPatientData();
      state.epoch = desk.session_epoch;
      if (masked) {
        show('patient');
        message(OTHER_SESSION);
      }
    }
    state.desk = desk;
    $('centre').textContent = desk.centre.name;
    $('desk-name').textContent = desk.desk.name;
    $('demo-banner').hidden = !desk.workstation.demo_loopback;
    if (desk.session) {
      renderSession(desk.session, desk.session_seconds_left);
      prepareForm(desk.break_glass);
      if ($('screen-summary').hidden && $('screen-patient').hidden) {
        message('');
        show('patient');
        $('ins').focus();
      }
      if (!$('screen-patient').hidden && !state.case) loadCase();
      return;
    }
    clearPatientData();
    $('session-bar').hidden = true;
    show('card');
    renderCard(desk.card, desk.desk.pin_entry);
  }

  function renderSession(session, secondsLeft) {
    const who = session.professional;
    $('who').textContent = 'Dr ' + [who.given_name, who.surname].filter(Boolean).join(' ');
    const since = new Date(session.started);
    let text = 'connecté depuis ' + since.toLocaleTimeString('fr-FR', { hour: '2-digit', minute: '2-digit' });
    if (typeof secondsLeft === 'number') {
      text += ' · fin de session dans ' + Math.max(1, Math.ceil(secondsLeft / 60)) + ' min';
    }
    $('session-since').textContent = text;
    $('session-bar').hidden = false;
  }

  function renderCard(card, pinEntry) {
    const title = $('card-title');
    const detail = $('card-detail');
    $('pin-form').hidden = true;
    $('pinpad').hidden = true;
    if (!card) {
      title.textContent = 'Connexion par carte non configurée';
      detail.textContent = 'Contactez le service informatique du centre.';
      return;
    }
    if (card.state !== 'present') state.pinpadFor = null;
    switch (card.state) {
      case 'no_card':
        title.textContent = 'Insérez votre carte CPS';
        detail.textContent = 'Dans le lecteur de ce poste.';
        break;
      case 'reader_unavailable':
        title.textContent = 'Lecteur de cartes indisponible';
        detail.textContent = 'Le service de lecture des cartes ne répond pas. Prévenez le service informatique.';
        break;
      case 'refused':
        title.textContent = 'Carte refusée';
        detail.textContent = card.message_fr;
        break;
      case 'present': {
        const holder = card.holder || {};
        title.textContent = 'Dr ' + [holder.given_name, holder.surname].filter(Boolean).join(' ');
        if (card.pin_blocked) {
          detail.textContent = 'Carte bloquée : trop de codes erronés. Utilisez votre code de déblocage (PUK) ou une autre carte.';
          break;
        }
        const tries = card.pin_tries_left;
        state.lastTry = tries === 1;
        const left = tries === undefined || tries === null ? '' :
          tries === 1 ? 'Dernier essai avant blocage de la carte.' : 'Il reste ' + tries + ' essais.';
        $('last-try-box').hidden = !state.lastTry;
        if (!state.lastTry) $('last-try').checked = false;
        if (pinEntry === 'pinpad') {
          detail.textContent = 'Saisissez votre code sur le lecteur.';
          $('pinpad-tries').textContent = left;
          $('pinpad').hidden = false;
          // No action needed on the screen: entry on the reader starts with the card. After
          // a failure the button starts it again. The last try is never started on its own:
          // the button says what it spends.
          if (state.lastTry) {
            $('pinpad-start').textContent = 'Utiliser le dernier essai sur le lecteur';
            $('pinpad-start').hidden = false;
            $('pinpad-start').focus();
          } else if (state.pinpadFor !== holder.certificate_sha256) {
            state.pinpadFor = holder.certificate_sha256;
            $('pinpad-start').hidden = true;
            login({});
          } else {
            $('pinpad-start').hidden = false;
            $('pinpad-start').focus();
          }
        } else {
          detail.textContent = 'Tapez votre code PIN puis Entrée.';
          $('pin-tries').textContent = left;
          $('pin-form').hidden = false;
          // A refresh (the desk's events) never takes the focus from the form's own fields
          // (the last-try box, say).
          if (!$('pin-form').contains(document.activeElement)) $('pin').focus();
        }
        break;
      }
      default:
        title.textContent = 'État de la carte inconnu';
        detail.textContent = '';
    }
  }

  async function login(body) {
    message('');
    // Longer than the longest login the gateway allows (120 s of card, 30 s of PIN pad):
    // a page giving up first would miss the session cookie of a login that succeeded.
    const answer = await api('POST', '/api/v1/session', body, 180000);
    $('pin').value = '';
    if (answer.status === 201) {
      await refreshDesk();
      return;
    }
    message(refusal(answer));
    await refreshDesk();
  }

  // ---- Identification and access ----------------------------------------------------

  function prepareForm(form) {
    if (state.formReady || !form) return;
    const oid = $('ins-oid');
    for (const choice of form.ins_oids) {
      const option = element('option', null, choice.label);
      option.value = choice.oid;
      oid.append(option);
    }
    const reason = $('reason');
    reason.append(Object.assign(element('option', null, 'Choisir un motif…'), { value: '' }));
    for (const r of form.reasons) {
      const option = element('option', null, r.label);
      option.value = r.code;
      option.dataset.textRequired = r.text_required ? 'yes' : 'no';
      reason.append(option);
    }
    state.grantMinutes = form.grant_minutes;
    state.formReady = true;
    reasonChanged();
  }

  function reasonChanged() {
    const option = $('reason').selectedOptions[0];
    const needsText = Boolean(option && option.dataset.textRequired === 'yes');
    $('reason-text-required').hidden = !needsText;
    // The physician's reason justifies the search for the case's patients (with its
    // written detail when the reason needs one: the search then starts once it is
    // typed); a drill's never searches the national record on its own.
    const justified = !needsText || $('reason-text').value.trim() !== '';
    if (state.case && !state.case.exercise && !state.caseSearched && option && option.value && justified) searchCase();
  }

  // INS (NIR or NIA): 13 characters (Corsica: 2A / 2B in the department) and a key,
  // 97 - (number mod 97), with 2A read as 19 and 2B as 18.
  function insCheck(raw) {
    // Spaces, and characters that print as nothing when an INS is pasted (zero-width
    // spaces and joiners, soft hyphen, direction marks, BOM): the server ignores the same.
    const value = raw.replace(/[\s\u00AD\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF]+/g, '').toUpperCase();
    if (!value) return { value, state: 'empty' };
    if (value.length < 15) return { value, state: 'short' };
    if (!/^[0-9]{5}([0-9]{2}|2A|2B)[0-9]{8}$/.test(value)) return { value, state: 'bad' };
    const number = value.slice(0, 13).replace('2A', '19').replace('2B', '18');
    const key = 97n - (BigInt(number) % 97n);
    return { value, state: key === BigInt(value.slice(13)) ? 'ok' : 'bad' };
  }

  function showInsCheck() {
    const check = insCheck($('ins').value);
    const out = $('ins-check');
    const texts = {
      empty: ['', ''],
      short: ['', check.value.length + ' / 15 caractères'],
      ok: ['ok', '✓ Clé de contrôle correcte'],
      bad: ['bad', '✗ INS invalide : vérifiez la saisie'],
    };
    const [kind, text] = texts[check.state];
    out.className = 'check ' + kind;
    out.textContent = text;
    return check;
  }

  function formProblem() {
    const ins = insCheck($('ins').value);
    if (ins.state !== 'ok') return ['ins', 'Saisissez un INS valide (15 caractères, clé de contrôle correcte).'];
    if (!$('call-id').value.trim()) return ['call-id', "Saisissez le numéro de l'appel."];
    const reason = $('reason').selectedOptions[0];
    if (!reason || !reason.value) return ['reason', "Choisissez le motif de l'accès."];
    if (reason.dataset.textRequired === 'yes' && !$('reason-text').value.trim()) {
      return ['reason-text', 'Ce motif demande des précisions.'];
    }
    return null;
  }

  // ---- Identification by traits: the record service proposes, the physician chooses ----

  function toggleTraits() {
    const open = $('traits').hidden;
    $('traits').hidden = !open;
    $('traits-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('birth-name').focus();
  }

  // ---- The case the regulation software sent: its patients, identified by their traits --

  const HUB_SEX = { F: 'f', M: 'm', O: 'i', UN: 'i' };
  const HUB_SEX_TEXT = { F: 'femme', M: 'homme', O: 'autre', UN: 'sexe inconnu' };

  // The traits a search needs, from what the regulation software sent; null if incomplete.
  // A birth date with an unknown day or month (00), or one that names no day, is
  // incomplete: a guessed day would find someone else.
  function caseTraits(p) {
    const birthName = p.birth_name || p.last_name;
    if (!birthName || !p.first_name || !p.sex) return null;
    const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(p.birth_date || '');
    if (!day || day[1] === '0000' || !calendarDay(Number(day[1]), Number(day[2]), Number(day[3]))) return null;
    return { birth_name: birthName, first_names: p.first_name, birth_date: p.birth_date, sex: HUB_SEX[p.sex] };
  }

  async function loadCase() {
    // Without the event stream a pulled card would leave the case's patients on screen:
    // the case waits for it (its first event loads it).
    if (!state.following) return;
    const asked = state.cleared;
    const answer = await api('GET', '/api/v1/case');
    if (asked !== state.cleared || !state.following || answer.status !== 200 || state.case) return;
    // Only the case the desk's events last announced: an answer made before the case was
    // closed (or replaced by another) is not shown.
    if (answer.data.case_id !== state.caseId) return;
    // An answer older than the sending the desk's events last announced (a corrected case
    // overtook it): asked again, never shown.
    if (state.caseVersion !== undefined && answer.data.version < state.caseVersion) {
      loadCase();
      return;
    }
    const c = answer.data;
    state.case = c;
    // Its patients' answer blocks are drawn anew below: none holds an answer yet.
    state.caseFound = new Set();
    const head = ['N° ' + c.case_id, c.motive_label, c.priority ? 'priorité ' + c.priority : null]
      .filter(Boolean).join(' · ');
    $('case-head').replaceChildren(
      ...(c.exercise ? [element('strong', 'exercise', 'EXERCICE'), document.createTextNode(' ')] : []),
      document.createTextNode(head));
    const items = c.patients.map((p, i) => {
      const item = element('li');
      const who = [p.birth_name || p.last_name, p.first_name].filter(Boolean).join(' ') || 'Identité inconnue';
      const facts = [p.sex ? HUB_SEX_TEXT[p.sex] : null, birthText(p.birth_date)]
        .filter(Boolean).join(', ');
      item.append(element('p', 'case-who', facts ? who + ' — ' + facts : who));
      const said = [['Antécédents (dits à l’appel)', p.history], ['Traitements (dits à l’appel)', p.treatment]]
        .concat(p.notes.map((n) => ['Note', n]))
        .filter(([, text]) => text);
      for (const [label, text] of said) item.append(element('p', 'case-said', label + ' : ' + text));
      // A NIR someone said or read during the call: no identity check stands behind it, so
      // it is shown as such and only copied into the INS field when the physician asks; the
      // access then shows the record's identity to compare with the caller's words.
      if (p.nir_unverified) {
        const nir = element('p', 'case-nir', 'NIR donné à l’appel, non vérifié : ' + p.nir_unverified + ' ');
        const use = element('button', null, 'Reporter dans le champ INS');
        use.type = 'button';
        use.addEventListener('click', () => {
          $('ins').value = p.nir_unverified;
          state.insFromCase = p.nir_unverified;
          showInsCheck();
          $('ins').focus();
        });
        nir.append(use);
        item.append(nir);
      }
      if (!caseTraits(p)) {
        item.append(element('p', 'hint', 'Traits incomplets : identifiez ce patient par son INS.'));
      }
      const out = element('div', 'candidates');
      out.id = 'case-candidates-' + i;
      out.setAttribute('aria-live', 'polite');
      item.append(out);
      return item;
    });
    $('case-patients').replaceChildren(...items);
    // A drill's patients are not looked for in the national record: real people may bear
    // a drill's made-up traits, and a drill justifies no access.
    const searchable = !c.exercise && c.patients.some(caseTraits);
    $('case-hint').textContent = c.exercise
      ? 'Exercice : aucune recherche n’est faite dans le dossier national pour ce dossier.'
      : searchable
        ? 'Choisissez le motif de l’accès : les patients correspondants s’afficheront ici.'
        : '';
    // A drill justifies no access: its id is not offered as the call's.
    if (!c.exercise && !$('call-id').value.trim()) $('call-id').value = c.case_id;
    $('case').hidden = false;
    // The focus moves to the reason only from an untouched form: a physician already typing
    // an INS keeps their place.
    const idle = document.activeElement === document.body ||
      (document.activeElement === $('ins') && !$('ins').value.trim());
    if (searchable && !$('reason').value && idle) $('reason').focus();
    // A case that comes once the reason is chosen (or comes back corrected after its
    // search) is searched for under that reason, when the call is the case's: the
    // physician has nothing to choose again, and no hint says "choose" beside a reason
    // already chosen.
    if (searchable && $('reason').value && $('call-id').value.trim() === c.case_id) {
      reasonChanged();
      if (state.caseSearched) $('case-hint').textContent = 'Patients du dossier recherchés pour le motif choisi.';
    }
  }

  // Whether the focus may move to what an answer brought: only if it is still where it
  // was when the question was asked (a physician who went on typing keeps their place).
  function focusUnmoved(from) {
    return document.activeElement === from || document.activeElement === document.body;
  }

  // A search answered while the desk's stream is down is not shown: the page could not
  // learn of a card pulled meanwhile.
  const SEARCH_DROPPED = 'Liaison avec le serveur interrompue : la recherche a été abandonnée par sécurité. Recommencez-la.';

  async function searchCase() {
    state.caseSearched = true;
    const asked = state.cleared;
    const from = document.activeElement;
    const shown = state.case;
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const text = $('reason-text').value.trim();
    let first = null;
    for (const [i, p] of shown.patients.entries()) {
      const traits = caseTraits(p);
      // Asked again only for those a refusal left without an answer (each search is on
      // the record and counts against the limits).
      if (!traits || state.caseFound.has(i)) continue;
      const answer = await api('POST', '/api/v1/patients/search', {
        traits, access_mode: mode, call_id: $('call-id').value.trim(), reason_code: $('reason').value,
        reason_text: text || null,
      });
      // The page was cleared, or the case closed or replaced, meanwhile: nothing to show;
      // nor while the desk's stream is down (a pulled card would go unnoticed).
      if (asked !== state.cleared || state.case !== shown) return;
      if (!state.following) {
        message(SEARCH_DROPPED);
        return;
      }
      const out = $('case-candidates-' + i);
      if (answer.status !== 200) {
        out.replaceChildren(element('p', 'status', refusal(answer)));
        // Asked again at the next change of the reason or its detail: a refusal (a
        // limit, the record service down) must not end the search for the whole case.
        state.caseSearched = false;
        continue;
      }
      state.caseFound.add(i);
      renderCandidates(out, answer.data.candidates, true);
      first = first || out.querySelector('button:not([disabled])');
    }
    if (first && focusUnmoved(from)) first.focus();
  }

  // The candidates a search found, each a button that fills the identification.
  function renderCandidates(out, candidates, fromCase) {
    if (!candidates.length) {
      out.replaceChildren(element('p', 'status', 'Aucun patient trouvé avec ces traits.'));
      return;
    }
    const list = element('ul');
    for (const c of candidates) {
      const item = element('li');
      // How well the record service says the candidate matches (the DMP does): a weak
      // match must not look like a sure one.
      const match = Number.isInteger(c.match_percent) ? 'correspondance ' + c.match_percent + ' %' : null;
      // Sex in words whichever service said it (FHIR's female, the DMP's F), and the
      // birthplace when given: what tells two namesakes born the same day apart.
      const label = [c.names.join(' / '), birthText(c.birth_date),
        GENDER_TEXT[c.gender] || (c.gender ? 'sexe : ' + c.gender : null),
        c.birthplace ? 'lieu de naissance (INSEE) ' + c.birthplace : null,
        match].filter(Boolean).join(' — ');
      const choose = element('button', null, c.ins ? label : label + ' — sans INS qualifié : accès impossible');
      choose.type = 'button';
      choose.disabled = !c.ins;
      choose.addEventListener('click', () => chooseCandidate(c, fromCase));
      item.append(choose);
      list.append(item);
    }
    out.replaceChildren(element('p', null, candidates.length + ' patient(s) trouvé(s) : choisissez.'), list);
  }

  async function searchTraits() {
    const traits = {
      // Composed (NFC), as the record services write names: a pasted decomposed accent
      // is otherwise no letter (the server composes them too).
      birth_name: $('birth-name').value.normalize('NFC').trim(),
      first_names: $('first-names').value.normalize('NFC').trim(),
      birth_date: $('birth-date').value,
      sex: $('sex').value,
    };
    if (!traits.birth_name || !traits.first_names || !traits.birth_date) {
      message('Nom de naissance, prénoms et date de naissance sont nécessaires.');
      $(!traits.birth_name ? 'birth-name' : !traits.first_names ? 'first-names' : 'birth-date').focus();
      return;
    }
    // A search releases identities: it is justified like an access, before it is sent.
    const callId = $('call-id').value.trim();
    const reason = $('reason').value;
    if (!callId || !reason) {
      message('Saisissez d\u2019abord le numéro d\u2019appel et le motif : une recherche d\u2019identité est un accès au dossier.');
      $(callId ? 'reason' : 'call-id').focus();
      return;
    }
    const place = $('birthplace').value.trim().toUpperCase();
    if (place) traits.birthplace = place;
    message('');
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const text = $('reason-text').value.trim();
    const asked = state.cleared;
    const search = ++state.searches;
    const from = document.activeElement;
    const answer = await api('POST', '/api/v1/patients/search', {
      traits, access_mode: mode, call_id: callId, reason_code: reason, reason_text: text || null,
    });
    // The card was pulled (or the page cleared) while the answer was on its way: the
    // identities it holds are not written into the page for the next physician. A later
    // search (traits corrected) wins over this one, whichever answers last.
    if (asked !== state.cleared || search !== state.searches) return;
    if (!state.following) {
      message(SEARCH_DROPPED);
      return;
    }
    const out = $('candidates');
    if (answer.status !== 200) {
      out.replaceChildren();
      message(refusal(answer));
      return;
    }
    renderCandidates(out, answer.data.candidates);
    const first = out.querySelector('button:not([disabled])');
    if (first && focusUnmoved(from)) first.focus();
  }

  function chooseCandidate(candidate, fromCase) {
    const oid = $('ins-oid');
    // An identifier of a type this desk does not offer is not filled in under another
    // type (an NIA sent as an NIR names someone else, or no one).
    if (![...oid.options].some((o) => o.value === candidate.ins.oid)) {
      message('Ce patient est identifié par un type d’INS que ce poste ne propose pas : accès impossible par ce choix.');
      return;
    }
    $('ins').value = candidate.ins.value;
    state.insFromCase = fromCase ? candidate.ins.value : null;
    oid.value = candidate.ins.oid;
    showInsCheck();
    $('candidates').replaceChildren();
    $('traits').hidden = true;
    $('traits-toggle').setAttribute('aria-expanded', 'false');
    // The call and reason were given for the search: the access is one key away.
    $('access-submit').focus();
  }

  async function requestAccess(event) {
    event.preventDefault();
    const problem = formProblem();
    if (problem) {
      message(problem[1]);
      $(problem[0]).focus();
      return;
    }
    message('');
    const submit = $('access-submit');
    submit.disabled = true;
    submit.textContent = 'Recherche en cours…';
    const text = $('reason-text').value.trim();
    const asked = state.cleared;
    const ins = insCheck($('ins').value).value;
    // The case the INS was taken from, if it was (a candidate of its search, its NIR):
    // the regulation software correcting or closing it meanwhile may mean another patient.
    const sending = (c) => (c ? c.case_id + '#' + c.version : null);
    const fromCase = state.insFromCase && state.case && bare(ins) === bare(state.insFromCase) ? sending(state.case) : null;
    // The patient asked for stays the one on the form until the answer comes: a number
    // corrected meanwhile would sit beside another patient's summary.
    $('ins').readOnly = true;
    state.accessOnItsWay = true;
    const answer = await api('POST', '/api/v1/break-glass', {
      ins,
      ins_oid: $('ins-oid').value,
      call_id: $('call-id').value.trim(),
      reason_code: $('reason').value,
      reason_text: text || null,
      access_mode: document.querySelector('input[name="mode"]:checked').value,
    });
    state.accessOnItsWay = false;
    // A summary is shown only while the event stream would tell of a pulled card: if it
    // is not back within a few seconds, the summary is not shown and its grant is ended.
    // Once back, its first event has said whether the session is still the one the
    // access was asked under (if not, the page was cleared: below). The form stays
    // locked meanwhile: a second Enter would be a second access.
    const unfollowed = answer.status === 201 && asked === state.cleared && !(await following(5000));
    submit.disabled = false;
    submit.textContent = 'Afficher la synthèse';
    $('ins').readOnly = false;
    if (unfollowed) {
      await endGrant(answer.data.grant.id);
      message('Liaison avec le serveur interrompue : la demande a été abandonnée par sécurité. Recommencez-la.');
      return;
    }
    // The card was pulled (or the page cleared, or the event stream broke) while the
    // answer was on its way: it is not shown, and its grant is ended.
    if (asked !== state.cleared) {
      if (answer.status === 201) await endGrant(answer.data.grant.id);
      return;
    }
    if (answer.status === 201) {
      showSummary(answer.data, ins);
      if (fromCase && sending(state.case) !== fromCase) {
        message('Le dossier de régulation a été corrigé ou clos pendant la demande : vérifiez que ce patient est bien celui de l\u2019appel.');
      }
      return;
    }
    message(refusal(answer));
    $('ins').focus();
  }

  // ---- The summary ------------------------------------------------------------------

  const MODE_TEXT = {
    bris_de_glace: 'ACCÈS EN BRIS DE GLACE',
    centre_15: 'ACCÈS CENTRE 15 (RÉGULATION)',
  };

  // `ins`: the identifier the access asked for, shown with whom the document names.
  function showSummary(delivered, ins) {
    // Never two countdowns: the one of a summary shown before goes with it.
    if (state.countdown) clearInterval(state.countdown);
    // warned: the minute-left notice was said (never for a grant that opens with less).
    state.grant = {
      id: delivered.grant.id,
      ends: Date.now() + delivered.grant.seconds_left * 1000,
      warned: delivered.grant.seconds_left <= 60,
    };
    const banner = $('grant-banner');
    banner.replaceChildren(
      element('span', null, MODE_TEXT[delivered.grant.access_mode] || 'ACCÈS'),
      document.createTextNode(' · appel ' + delivered.grant.call_id + ' · '),
      element('span', 'time-left'),
    );
    $('grant-said').textContent = 'Accès ouvert pour ' + Math.max(1, Math.round(delivered.grant.seconds_left / 60)) + ' min.';
    tick();
    state.countdown = setInterval(tick, 1000);
    const stale = $('stale-banner');
    if (delivered.stale) {
      stale.textContent = 'DONNÉES ANCIENNES : ' + (STALE_BECAUSE[delivered.stale_because] || STALE_BECAUSE.unavailable) +
        ' Copie locale datant de ' + age(delivered.age_seconds) + ', peut-être incomplète ou dépassée.';
      stale.classList.remove('copy');
      stale.hidden = false;
    } else if (delivered.source === 'cache') {
      // A fresh copy is still a copy: the physician sees its age, not a live answer.
      stale.textContent = 'Copie locale datant de ' + age(delivered.age_seconds) +
        ' (dossier national consulté à ce moment-là).';
      stale.classList.add('copy');
      stale.hidden = false;
    } else {
      stale.hidden = true;
    }
    $('summary').replaceChildren(...whose(delivered.summary, ins), ...renderSummary(delivered.summary, delivered.grant.id));
    show('summary');
    const allergies = document.querySelector('#summary .allergies h2');
    if (allergies) allergies.focus();
  }

  function tick() {
    if (!state.grant) return;
    const left = Math.max(0, Math.round((state.grant.ends - Date.now()) / 1000));
    const out = document.querySelector('#grant-banner .time-left');
    if (out) out.textContent = 'reste ' + Math.floor(left / 60) + ' min ' + String(left % 60).padStart(2, '0') + ' s';
    // Said once, a minute before the summary leaves the screen.
    if (left <= 60 && left > 0 && !state.grant.warned) {
      state.grant.warned = true;
      $('grant-said').textContent = 'Il reste une minute avant la fin de l\u2019accès.';
    }
    if (left === 0) {
      clearPatientData();
      show('patient');
      message("Accès terminé : sa durée est écoulée. Recommencez si nécessaire.");
      $('ins').focus();
    }
  }

  function age(seconds) {
    if (seconds < 60) return 'moins d\u2019une minute';
    if (seconds < 3600) return Math.round(seconds / 60) + ' min';
    if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
    return Math.round(seconds / 86400) + ' jours';
  }

  // ISO dates (FHIR's: 2026, 2026-11, 2026-11-20, 2026-11-20T10:00:00+01:00), and HL7 v3
  // ones (CDA: 20261120, 20261120100000+0100), in words; nothing else. `new Date(text)`
  // reads whatever it can ("01/02/2024" as 2 January): a date in any other shape, or one
  // that does not exist, is shown as written and said not understood, never as a date.
  // `zoneless`: how a time written without its zone is read. The national record's
  // registry dates are UTC ('utc'); a document's own times without a zone are taken as
  // written. A time with its zone (HL7 `+0100`, ISO) is shown as the day it was here.
  function frenchDate(text, zoneless) {
    if (!text) return null;
    const written = String(text);
    const notUnderstood = unrecognisedDate(written);
    // A year, or a year and month, stays as precise as written: never "1 janvier".
    const partial = /^(\d{4})(?:-?(\d{2}))?$/.exec(written);
    if (partial) {
      if (!partial[2]) return partial[1];
      // A month out of range is never rolled over ("195013" is no January 1951).
      if (Number(partial[2]) < 1 || Number(partial[2]) > 12) return notUnderstood;
      const month = new Date(Number(partial[1]), Number(partial[2]) - 1, 1);
      if (Number.isNaN(month.getTime())) return notUnderstood;
      return month.toLocaleDateString('fr-FR', { month: 'long', year: 'numeric' });
    }
    // A day, then its time and zone when written, in either shape.
    const parts = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/.exec(written)
      || /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(?:(\d{2})(\d{2})?)?)?(?:\.\d+)?([+-]\d{4})?$/.exec(written);
    if (!parts) return notUnderstood;
    const [, year, month, day, hour, minute = '00', second = '00', zone] = parts;
    const zoneParts = zone && zone !== 'Z' ? /^([+-])(\d{2}):?(\d{2})$/.exec(zone) : null;
    // A day or a time that does not exist (30 February, 25:00, +25:00) would roll over
    // into one that does: not understood, never shown as another date.
    if (!calendarDay(Number(year), Number(month), Number(day))) return notUnderstood;
    if (hour !== undefined && (Number(hour) > 23 || Number(minute) > 59 || Number(second) > 60)) return notUnderstood;
    if (zoneParts && (Number(zoneParts[2]) > 14 || Number(zoneParts[3]) > 59)) return notUnderstood;
    const offset = zone === 'Z' ? 0
      : zoneParts ? (zoneParts[1] === '-' ? -1 : 1) * (Number(zoneParts[2]) * 60 + Number(zoneParts[3]))
        : zoneless === 'utc' ? 0 : null;
    // A day alone (a birth date), or a time whose zone is not known, is that day wherever
    // the workstation is: read as UTC midnight, it would be the day before west of
    // Greenwich.
    const date = hour !== undefined && offset !== null
      ? new Date(Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute),
        Number(second)) - offset * 60000)
      : new Date(Number(year), Number(month) - 1, Number(day));
    if (Number.isNaN(date.getTime())) return notUnderstood;
    return date.toLocaleDateString('fr-FR', { day: 'numeric', month: 'long', year: 'numeric' });
  }

  // A birth date in words, as precise as it was written: a day ("né(e) le 14 mars 1958"),
  // else a month or a year that says what is unknown. FHIR writes a partial date short
  // (1958, 1958-03), CDA too (1958, 195803); the Hub and the registers write an unknown
  // part as 00 (docs/case.md, "Birth dates"). A partial date is never shown as a day, and
  // one that names no day (1958-13-00, 1958-02-30) is shown as written, said not valid.
  function birthText(text) {
    if (!text) return null;
    const written = String(text).trim();
    const parts = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(written)
      || /^(\d{4})(?:(\d{2})(\d{2})?)?$/.exec(written)
      // HL7 with a time: the day is what is shown.
      || /^(\d{4})(\d{2})(\d{2})\d{2,6}(?:\.\d+)?(?:[+-]\d{4})?$/.exec(written);
    const invalid = 'date de naissance transmise non valide : ' + written;
    if (!parts) return invalid;
    const [, year, month = '00', day = '00'] = parts;
    if (year === '0000') return month === '00' && day === '00' ? 'date de naissance inconnue' : invalid;
    if (month === '00') return day === '00' ? 'né(e) en ' + year + ', jour et mois inconnus' : invalid;
    if (Number(month) > 12) return invalid;
    if (day === '00') return 'né(e) en ' + frenchDate(year + '-' + month) + ', jour inconnu';
    if (!calendarDay(Number(year), Number(month), Number(day))) return invalid;
    return 'né(e) le ' + frenchDate(year + '-' + month + '-' + day);
  }

  function calendarDay(year, month, dayOfMonth) {
    const t = new Date(Date.UTC(year, month - 1, dayOfMonth));
    return t.getUTCFullYear() === year && t.getUTCMonth() === month - 1 && t.getUTCDate() === dayOfMonth;
  }

  // A date as precise as the document wrote it: 2015, 03/2015, 17/03/2015.
  function shortDate(text) {
    if (!text) return null;
    // A time with its zone is a moment: its day is the one where the physician is (a
    // procedure at 23:30 UTC was the next day in France).
    if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}.*(Z|[+-]\d{2}:\d{2})$/.test(text)) {
      const moment = new Date(text);
      if (!Number.isNaN(moment.getTime())) return moment.toLocaleDateString('fr-FR');
    }
    // The same for HL7's form (a CDA's 20261011231500+0000).
    const hl7 = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:\.\d+)?([+-])(\d{2})(\d{2})$/.exec(text);
    if (hl7) {
      const [, year, month, day, hour, minute, second, sign, zoneHours, zoneMinutes] = hl7;
      const offset = (sign === '-' ? -1 : 1) * (Number(zoneHours) * 60 + Number(zoneMinutes));
      const moment = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour),
        Number(minute), Number(second || 0)) - offset * 60000);
      if (calendarDay(Number(year), Number(month), Number(day)) && !Number.isNaN(moment.getTime())) {
        return moment.toLocaleDateString('fr-FR');
      }
    }
    // A day, a month or a year, with a time but no zone at most: that day as written.
    // Anything else is shown as written and said not understood, never read in part
    // ("2024-01-02junk" is no 2 January, "2024-13-45" no date at all).
    const m = /^(\d{4})(?:-?(\d{2})(?:-?(\d{2}))?)?(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?|\d{4}(?:\d{2})?(?:\.\d+)?)?$/.exec(String(text));
    const month = m && m[2] ? Number(m[2]) : null;
    if (!m || (month !== null && (month < 1 || month > 12))
      || (m[3] && !calendarDay(Number(m[1]), month, Number(m[3])))) {
      return unrecognisedDate(text);
    }
    return [m[3], m[2], m[1]].filter(Boolean).join('/');
  }

  // A date the page cannot read, shown as written (cut) and said so: never as a date.
  function unrecognisedDate(text) {
    const written = String(text);
    return '« ' + (written.length > 64 ? written.slice(0, 64) + '…' : written) + ' » (date non reconnue)';
  }

  const TEMPLATE_TEXT = {
    'IPS-FR': 'synthèse médicale (IPS-FR)',
    VSM: 'volet de synthèse médicale',
    DLU: 'dossier de liaison d\u2019urgence',
    'LDL-SES': 'lettre de liaison de sortie',
    'LDL-EES': 'lettre de liaison d\u2019entrée',
    HR: 'historique des remboursements',
  };

  // FHIR's codes, and HL7 v3's (a CDA document's administrativeGenderCode).
  const GENDER_TEXT = {
    male: 'homme', female: 'femme', other: 'autre', unknown: 'sexe inconnu',
    M: 'homme', F: 'femme', U: 'sexe inconnu', UN: 'sexe inconnu',
  };

  // Whose summary this is, first: the identifier asked for and the patient the document
  // names, so that a summary is never read as another patient's.
  function whose(summary, ins) {
    const patient = summary.patient_in_document || {};
    const facts = [
      patient.names && patient.names.length ? patient.names.join(' / ') : 'patient non nommé dans le document',
      birthText(patient.birth_date),
      GENDER_TEXT[patient.gender] || null,
      ins ? 'INS demandé ' + ins : null,
    ].filter(Boolean);
    const named = element('p', 'patient', 'Patient : ' + facts.join(' · '));
    // Nothing in the document itself ties it to the INS (it names none, or names no
    // patient at all): only the record it was filed in.
    if (summary.patient_in_document && !patient.no_ins) return [named];
    return [named, element('p', 'no-ins',
      'Le document ne porte pas l\u2019INS du patient : vérifiez avec l\u2019appelant le nom, le prénom et la date de naissance avant de vous y fier.')];
  }

  const grantPath = (grantId) => '/api/v1/grants/' + encodeURIComponent(grantId);

  // `opened`: the unique id of a listed document opened on its own (its PDF has its own
  // route); absent for the access's summary.
  function renderSummary(summary, grantId, opened) {
    const pdfHref = grantPath(grantId) + (opened ? '/documents/' + encodeURIComponent(opened) + '/pdf' : '/document');
    const parts = [];
    const doc = summary.document || {};
    const kind = doc.title || TEMPLATE_TEXT[doc.template] || 'Document';
    // The document's own date only. A bundle's timestamp says when the bundle was put
    // together (a `$summary` made on request says "now"): shown as the document's date,
    // old data would look fresh. Beside an undated document it is said for what it is.
    const written = frenchDate(doc.date);
    const source = [kind + (written ? ' du ' + written : ', date inconnue')];
    if (!doc.date && doc.timestamp) {
      source.push('assemblé le ' + frenchDate(doc.timestamp) +
        ' pour l\u2019envoi : ce n\u2019est pas la date des informations');
    }
    if (doc.authors && doc.authors.length) source.push('auteur : ' + doc.authors.join(', '));
    if (doc.custodian) source.push(doc.custodian);
    if (doc.format === 'cda' && TEMPLATE_TEXT[doc.template] && doc.title) source.push(TEMPLATE_TEXT[doc.template]);
    parts.push(element('p', 'source', source.join(' · ')));
    // The summary is read from the record's most recent synthesis: the others (older,
    // or only scanned) may still hold what it lacks, so the physician is told they exist.
    const others = opened ? [] : (summary.documents || [])
      .filter((d) => SYNTHESIS_TYPES.includes(d.type_code) && !d.used_for.length);
    // A source the patient has not been shown (a diagnosis not yet announced): its
    // content is not for the caller, who may be the patient or a relative.
    if (!opened && (summary.documents || []).some((d) => d.used_for.length && d.hidden_from_patient)) {
      parts.push(element('p', 'note hidden-from-patient',
        'Document source non visible par le patient : ne pas en révéler le contenu à l\u2019appelant.'));
    }
    if (others.length) {
      parts.push(element('p', 'note other-syntheses', others.length === 1
        ? 'Le dossier contient une autre synthèse, non reprise ici : voir « Documents du dossier » ci-dessous.'
        : 'Le dossier contient ' + others.length + ' autres synthèses, non reprises ici : voir « Documents du dossier » ci-dessous.'));
    }
    // What changes how the summary is read is said in so many words.
    const notices = summary.notices || [];
    if (notices.includes('listing_partial')) {
      parts.push(element('p', 'partial', 'Attention : le DMP n’a listé qu’une partie des documents du dossier ; ' +
        'une synthèse plus récente peut manquer.'));
    }
    if (notices.includes('dispensations_left_out')) {
      parts.push(element('p', 'partial', 'Attention : l’historique des remboursements du dossier n’a pas été transmis ; ' +
        'les médicaments délivrés ne sont pas affichés.'));
    }
    // The reader's findings are technical (English); the physician needs to know the
    // summary may be partial, not the details.
    if (summary.warnings && summary.warnings.length && !summary.unstructured) {
      parts.push(element('p', 'partial', 'Attention : ' + summary.warnings.length +
        ' élément(s) du document source illisible(s), incohérent(s) ou incomplet(s) ; la synthèse peut être partielle.'));
    }
    parts.push(allergySection(summary.allergies, Boolean(summary.unstructured)));
    // An unstructured document has no section to read: the document itself, at once.
    if (summary.unstructured) {
      parts.push(unstructuredSection(summary.unstructured, doc, pdfHref));
      if (!opened && summary.documents && summary.documents.length) parts.push(documentsSection(summary.documents, grantId));
      return parts;
    }
    if (summary.vigilance) {
      parts.push(section('Points de vigilance', summary.vigilance, observationText));
    }
    parts.push(section('Traitements en cours', summary.medications, (m) =>
      [m.name, m.dosage.join(' ; '), statusWord(m.status), m.period ? 'période : ' + m.period : null]
        .filter(Boolean).join(' — ')));
    if (summary.dispensations) {
      const block = section('Délivrances récentes (remboursements)', summary.dispensations, (d) =>
        [d.name, d.date ? 'délivré le ' + shortDate(d.date) : null, d.quantity].filter(Boolean).join(' — '));
      block.classList.add('dispensations');
      block.querySelector('h2').after(element('p', 'note',
        'Médicaments délivrés en pharmacie d\u2019après l\u2019Assurance maladie : ce n\u2019est pas le traitement en cours.'));
      if (notices.includes('dispensations_unverified_identity')) {
        block.querySelector('h2').after(element('p', 'partial',
          'Historique sans INS : ces délivrances sont rattachées au patient par le seul classement du dossier ; vérifiez l\u2019identité.'));
      }
      parts.push(block);
    }
    parts.push(section('Problèmes actifs', summary.problems, problemText));
    parts.push(section('Antécédents', summary.past_problems, problemText));
    parts.push(section('Actes et interventions', summary.procedures, procedureText));
    if (summary.advance_directives) {
      parts.push(section('Directives anticipées', summary.advance_directives, observationText));
    }
    if (summary.immunizations) {
      parts.push(section('Vaccinations', summary.immunizations, (i) => [i.vaccine, shortDate(i.date)].filter(Boolean).join(' — ')));
    }
    if (summary.devices) parts.push(section('Dispositifs médicaux', summary.devices, (d) => d.name));
    if (summary.pregnancy) {
      parts.push(section('Grossesse', summary.pregnancy, observationText));
    }
    for (const other of summary.other_sections || []) {
      const block = element('section', 'section');
      block.append(element('h2', null, other.title || 'Autre section'));
      if (other.narrative) block.append(...narrativeText(other));
      // Entries the page does not show must not read as an empty section.
      else if (other.entries) block.append(element('p', 'note', other.entries + ' entrée(s) non affichée(s) ici : consultez le document.'));
      parts.push(block);
    }
    if (!opened && summary.documents && summary.documents.length) parts.push(documentsSection(summary.documents, grantId));
    return parts;
  }

  // Why the record service's answer is not the one shown (the gateway's `stale_because`).
  const STALE_BECAUSE = {
    unavailable: 'le dossier national ne répond pas.',
    timed_out: 'le dossier national n\u2019a pas répondu à temps.',
    unreadable: 'le dossier national a renvoyé un document illisible ; il contient peut-être des informations plus récentes que cette copie.',
  };

  // The record's synthesis kinds (IPS-FR, VSM, DLU, discharge letter): docs/dmp.md.
  const SYNTHESIS_TYPES = ['60591-5', 'SYNTH', '74207-2', '11490-0'];

  const USED_FOR = {
    summary: 'source de cette synthèse',
    dispensations: 'source des délivrances',
  };

  function documentText(d) {
    return [
      d.title || d.type_display || d.type_code || 'Document',
      d.creation_time ? 'du ' + frenchDate(d.creation_time, 'utc') : null,
      d.authors && d.authors.length ? 'par ' + d.authors.join(', ') : null,
      d.structured ? null : 'non structuré (PDF ou texte)',
      d.hidden_from_patient ? 'NON VISIBLE PAR LE PATIENT' : null,
      d.masked ? 'masqué aux professionnels, lisible ici avec l\u2019accord du patient' : null,
      d.replaced ? 'REMPLACÉ par une version plus récente' : null,
      d.filed_elsewhere ? 'CLASSÉ SOUS UN AUTRE IDENTIFIANT PATIENT : vérifier l\u2019identité' : null,
    ].filter(Boolean).join(' — ');
  }

  // The record's documents (the national record holds several): what each is, and which
  // the blocks above come from, so nothing shown is separated from its source. Each
  // other one opens below, read now from the record under the same grant (each opening
  // is recorded as a read).
  function documentsSection(documents, grantId) {
    const block = element('section', 'section documents');
    block.append(element('h2', null, 'Documents du dossier'));
    const list = element('ul');
    const opened = element('div', 'opened-document');
    opened.id = 'opened-document';
    for (const d of documents) {
      const item = element('li', d.used_for.length ? 'used' : null, documentText(d));
      if (d.used_for.length) {
        item.append(element('strong', null, ' (' + d.used_for.map((u) => USED_FOR[u] || u).join(', ') + ')'));
      } else {
        const open = element('button', 'open-listed', 'Ouvrir');
        open.type = 'button';
        open.setAttribute('aria-label', 'Ouvrir ' + documentText(d));
        open.addEventListener('click', () => openListed(d, grantId, opened));
        item.append(document.createTextNode(' '), open);
      }
      list.append(item);
    }
    block.append(list, opened);
    return block;
  }

  async function openListed(d, grantId, panel) {
    panel.replaceChildren(element('p', 'status', 'Lecture du document dans le dossier…'));
    const asked = ++state.documentsAsked;
    const answer = await api('GET', grantPath(grantId) + '/documents/' + encodeURIComponent(d.unique_id));
    // The access ended (or another began) meanwhile: nothing of it is shown. Nor when
    // another document was asked for since: its answer, not this one, fills the panel.
    if (!state.grant || state.grant.id !== grantId || !panel.isConnected) return;
    if (asked !== state.documentsAsked) return;
    if (answer.status !== 200) {
      panel.replaceChildren(element('p', 'error', refusal(answer)));
      return;
    }
    const heading = element('h2', null, 'Document ouvert : ' + documentText(d));
    heading.tabIndex = -1;
    const close = element('button', 'close-listed', 'Fermer ce document');
    close.type = 'button';
    close.addEventListener('click', () => panel.replaceChildren());
    const apart = element('p', 'note', 'Document consulté à part : son contenu n\u2019est pas intégré à la synthèse ci-dessus.');
    panel.replaceChildren(heading, apart, ...whose(answer.data.summary, null),
      ...renderSummary(answer.data.summary, grantId, d.unique_id), close);
    heading.focus();
  }

  function observationText(o) {
    return [o.name, o.value, shortDate(o.date)].filter(Boolean).join(' — ');
  }

  // A PDF or a text wrapped in the record's document format: the text inline, the PDF in
  // the browser's own viewer (a new tab, under the grant: recorded as a read).
  function unstructuredSection(body, doc, pdfHref) {
    const block = element('section', 'section unstructured');
    block.append(element('h2', null, 'Document non structuré'));
    block.append(element('p', 'note', 'Le dossier ne contient ce document que sous forme ' +
      (body.pdf ? 'PDF' : body.text !== null && body.text !== undefined ? 'de texte' : 'non lisible ici') +
      ' : les rubriques ci-dessus ne peuvent pas en être extraites. Lisez-le.'));
    if (body.text !== null && body.text !== undefined) {
      block.append(element('pre', 'document-text', body.text));
    } else if (body.pdf) {
      const link = element('a', 'open-document', 'Ouvrir le document PDF (' + Math.max(1, Math.round(body.size / 1024)) + ' ko)');
      link.href = pdfHref;
      link.target = '_blank';
      // Opened by the page, which keeps the tab's handle: the tab closes with the rest of
      // the patient's data (card pulled, logout, access closed), never left to the next
      // physician at the desk. Same origin, under the PDF's own CSP (no script).
      const openTab = (event) => {
        event.preventDefault();
        const tab = window.open(pdfHref, '_blank');
        if (tab) state.tabs.push(tab);
      };
      link.addEventListener('click', openTab);
      // A middle click opens it the same way; the context menu and a drag, which would
      // open a tab the page cannot close, are not offered.
      link.addEventListener('auxclick', (event) => {
        if (event.button === 1) openTab(event);
      });
      link.addEventListener('contextmenu', (event) => event.preventDefault());
      link.addEventListener('dragstart', (event) => event.preventDefault());
      block.append(link);
    } else if (body.by_reference) {
      block.append(element('p', 'status', 'Le contenu n\u2019est pas joint au document : consultez-le dans le DMP.'));
    } else {
      block.append(element('p', 'status', 'Contenu illisible ou de type non affichable (' + body.media_type + ').'));
    }
    return block;
  }

  // A diagnosis the author has not confirmed must not read as an established problem.
  const VERIFICATION = {
    provisional: 'diagnostic provisoire', differential: 'diagnostic différentiel',
    unconfirmed: 'non confirmé', refuted: 'RÉFUTÉ', 'entered-in-error': 'saisi par erreur',
  };

  function problemText(p) {
    return [p.name, p.onset ? 'depuis ' + shortDate(p.onset) : null, statusWord(p.clinical_status),
      VERIFICATION[p.verification_status] || null]
      .filter(Boolean).join(' — ');
  }

  // A procedure is shown as done only when it was: one under way, planned or stopped says so.
  function procedureText(p) {
    const status = p.status && p.status !== 'completed' ? statusWord(p.status) : null;
    return [p.name, shortDate(p.performed), status].filter(Boolean).join(' — ');
  }

  // An item's status when it is not plainly current: a stopped treatment or a resolved
  // problem must not read as a current one.
  const ITEM_STATUS = {
    completed: 'terminé', stopped: 'ARRÊTÉ', 'on-hold': 'suspendu', suspended: 'suspendu',
    'not-taken': 'NON PRIS', intended: 'prévu, pas encore pris', aborted: 'interrompu',
    cancelled: 'annulé', unknown: 'statut inconnu', inactive: 'inactif', resolved: 'résolu',
    'in-progress': 'en cours', preparation: 'en préparation',
    'do-not-perform': 'NE PAS ADMINISTRER',
    remission: 'en rémission', recurrence: 'récidive', relapse: 'rechute',
  };
  function statusWord(value) {
    if (!value || value === 'active') return null;
    return 'statut : ' + (ITEM_STATUS[value] || value);
  }

  // FHIR's criticality codes (the CDA reader maps HL7's onto them); a PCC severity comes
  // as written.
  const CRITICALITY_TEXT = {
    low: 'criticité faible',
    'unable-to-assess': 'criticité non évaluable',
  };

  const ALLERGY_STATUS = {
    none_known: ['none-known', 'Aucune allergie connue (déclaré dans le dossier).'],
    not_recorded: ['not-recorded', 'Allergies non renseignées : absence d\u2019information, pas absence d\u2019allergie.'],
    unreadable: ['not-recorded', 'Allergies présentes dans le document mais illisibles : ne pas conclure à leur absence.'],
  };

  // A contradictory section is never read as absence: its own warning, then whatever it
  // holds. Items first, then what the document says of absence, then what was left out.
  const CONFLICT = {
    items: 'Document contradictoire : il déclare aussi une absence d\u2019allergie ou d\u2019information, mais contient les allergies ci-dessous. Ne pas conclure à leur absence.',
    statements: 'Document contradictoire : « aucune allergie connue » et « pas d\u2019information » à la fois. Statut allergique inconnu : ne pas conclure à leur absence.',
    other: 'Document contradictoire : ne pas conclure à une absence.',
  };

  function allergySection(allergies, unstructured) {
    const block = element('section', 'section allergies');
    const heading = element('h2', null, 'Allergies et intolérances');
    heading.tabIndex = -1;
    block.append(heading);
    const listed = allergies.items || [];
    const unlisted = allergies.unlisted_items || [];
    if (allergies.status === 'conflicting') {
      const text = listed.length || unlisted.length ? CONFLICT.items : CONFLICT.statements;
      block.append(element('p', 'status conflicting', text));
    }
    if (listed.length || unlisted.length) {
      const list = element('ul');
      for (const a of listed) list.append(allergyItem(a, false));
      for (const a of unlisted) list.append(allergyItem(a, true));
      block.append(list);
    } else if (allergies.status !== 'conflicting') {
      // Not recorded above a text (or beside entries that could not be read): what is
      // missing is the structure, maybe not the information; never "absence
      // d'information" above a text that names an allergy.
      const notRecorded = allergies.status === 'not_recorded';
      const [kind, text] = unstructured
        ? ['not-recorded', 'Document non structuré : les allergies ne peuvent pas en être extraites. Lisez le document ci-dessous.']
        : notRecorded && allergies.narrative
          ? ['not-recorded', 'Allergies non structurées dans le document : lisez le texte ci-dessous, ne pas conclure à leur absence.']
          : notRecorded && allergies.unreadable_entries > 0
            ? ['not-recorded', 'Entrées d\u2019allergie illisibles dans le document : ne pas conclure à leur absence.']
            : ALLERGY_STATUS[allergies.status] || ['not-recorded', 'Allergies : information indisponible.'];
      block.append(element('p', 'status ' + kind, text));
    }
    block.append(...sectionNotes(allergies));
    // The allergy section's own text is always shown: coded entries saying "none known",
    // or one allergy, may sit beside a text naming another, which no reader can weigh.
    const fallback = fallbackText(allergies);
    block.append(...(fallback.length ? fallback : sectionText(allergies)));
    return block;
  }

  function sectionText(data) {
    if (!data.narrative) return [];
    const block = element('div', 'fallback');
    block.append(element('p', 'note', 'Texte de la section dans le document (à lire aussi : il peut en dire plus que les entrées) :'));
    block.append(...narrativeText(data));
    return [block];
  }

  // A section's text, and when the gateway had to cut it, a warning under it: the part left
  // out may name an allergy, and a long text ending in « … » reads as whole.
  function narrativeText(data) {
    const parts = [element('p', 'narrative', data.narrative)];
    if (data.narrative_cut) {
      parts.push(element('p', 'status conflicting narrative-cut',
        'Texte coupé : trop long pour être affiché en entier. La suite n\u2019est pas affichée et peut contenir une information importante.'));
    }
    return parts;
  }

  function allergyItem(a, unlisted) {
    const item = element('li');
    item.append(element('strong', null, a.substance));
    // Spaces between the parts: a screen reader reads "Pénicilline, criticité haute".
    if (a.criticality === 'high') item.append(document.createTextNode(' '), element('span', 'critical', 'CRITICITÉ HAUTE'));
    const more = [];
    // Every other criticality or severity is shown as the document gives it.
    const criticality = CRITICALITY_TEXT[a.criticality];
    if (a.criticality && a.criticality !== 'high') more.push(criticality || 'gravité : ' + a.criticality);
    if (a.kind === 'intolerance') more.push('intolérance');
    else if (a.kind && a.kind !== 'allergy') more.push(a.kind);
    if (a.reactions && a.reactions.length) more.push(a.reactions.join(' ; '));
    if (a.verification_status === 'unconfirmed') more.push('non confirmée');
    const status = statusWord(a.clinical_status);
    if (status) more.push(status);
    if (more.length) item.append(document.createTextNode(' — ' + more.join(' — ')));
    if (unlisted) item.append(document.createTextNode(' '), element('span', 'unlisted', 'non listée dans la section allergies du document'));
    return item;
  }

  // What the document says of absence when it also says something else, and what the
  // gateway could not show: every section, inside its own block.
  function sectionNotes(data) {
    const notes = [];
    if (data.statements && data.statements.length) {
      // Always shown: a statement may deny one kind only ("pas d'allergie médicamenteuse").
      const lead = data.status === 'conflicting' ? 'Le document déclare aussi : ' : 'Le document déclare : ';
      notes.push(element('p', 'note', lead + data.statements.map((s) => '« ' + s + ' »').join(' ; ') + '.'));
    }
    if (data.duplicate_entries) {
      notes.push(element('p', 'note defect', 'Document incohérent : entrées en double (' + data.duplicate_entries +
        ') ; toutes les versions sont affichées.'));
    }
    if (data.unreadable_entries && data.status !== 'unreadable') {
      notes.push(element('p', 'note defect', data.unreadable_entries + ' entrée(s) illisible(s) : la liste peut être incomplète.'));
    }
    if (data.other_person_entries) {
      notes.push(element('p', 'note', data.other_person_entries + ' entrée(s) concernant une autre personne ignorée(s).'));
    }
    return notes;
  }

  const SECTION_STATUS = {
    none_known: 'Aucun connu (déclaré dans le dossier).',
    not_recorded: 'Non renseigné.',
    unreadable: 'Présent dans le document mais illisible.',
  };

  function section(title, data, describe) {
    const block = element('section', 'section');
    block.append(element('h2', null, title));
    if (data.status === 'conflicting') block.append(element('p', 'status conflicting', CONFLICT.other));
    if (data.items.length) {
      const list = element('ul');
      for (const item of data.items) list.append(element('li', null, describe(item)));
      block.append(list);
    } else if (data.status === 'not_recorded' && data.narrative) {
      // "Not recorded" above a text that says something would read as a contradiction:
      // what is missing is the structure, not the information.
      block.append(element('p', 'status', 'Pas de donnée structurée : lisez le texte du document.'));
    } else if (data.status !== 'conflicting') {
      block.append(element('p', 'status', SECTION_STATUS[data.status] || 'Non renseigné.'));
    }
    block.append(...sectionNotes(data));
    // The section's own text is shown beside its entries, as the allergies' is: coded
    // treatments may leave out one the text names (an anticoagulant), or a coded "none"
    // sit beside a text naming one.
    const fallback = fallbackText(data);
    block.append(...(fallback.length ? fallback : sectionText(data)));
    return block;
  }

  // When entries are missing or unreadable, the section's own text is what the document
  // says: shown as written, labelled as such.
  function fallbackText(data) {
    // Also beside what was read when some entries were not: the missing one may be there.
    const partial = data.unreadable_entries > 0 || data.status === 'conflicting';
    if (!data.narrative || (!partial && data.status !== 'not_recorded' && data.status !== 'unreadable')) return [];
    const block = element('div', 'fallback');
    block.append(element('p', 'note', 'Texte de la section dans le document (non structuré) :'));
    block.append(...narrativeText(data));
    return [block];
  }

  async function closeAccess() {
    const grant = state.grant;
    clearPatientData();
    show('patient');
    $('ins').focus();
    // The desk's case, if the regulation software still holds one there, comes back.
    loadCase();
    if (grant) await endGrant(grant.id);
  }

  // ---- Following the desk -----------------------------------------------------------

  // Waits before opening the stream again, after the browser gave up on it: doubles from
  // one second up to fifteen, back to one once it opens.
  let reopenDelay = 1000;
  const LINK_DOWN = 'Liaison avec le serveur interrompue : reconnexion en cours. Aucune donnée patient ne s\u2019affiche d\u2019ici là.';

  // The gateway says something at least every 10 s (a `beat` when nothing changes): a
  // stream silent for longer than this is lost, though the browser still holds it open (a
  // frozen gateway, a link whose state a firewall dropped without a reset).
  const SILENT_MS = 25000;

  function follow() {
    const events = new EventSource('/api/v1/desk/events');
    let silence = null;
    let done = false;
    // Closed by the page: treated as lost, and opened again (once).
    const giveUp = () => {
      if (done) return;
      done = true;
      clearTimeout(silence);
      events.close();
      lost(events);
    };
    // Armed again by everything the stream says, and while the browser reconnects.
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(giveUp, SILENT_MS);
    };
    events.addEventListener('open', () => {
      reopenDelay = 1000;
      heard();
      endMaskedGrants();
    });
    events.addEventListener('beat', heard);
    events.addEventListener('error', () => {
      if (events.readyState === EventSource.CLOSED) {
        giveUp();
      } else {
        heard();
        lost(events);
      }
    });
    events.addEventListener('desk', (event) => {
      heard();
      deskChanged(event);
    });
  }

  // Ends a grant the page no longer shows; one the gateway cannot be reached for is kept
  // and ended once the link is back (one the session already ended answers 404: nothing
  // left to do).
  async function endGrant(id) {
    const answer = await api('DELETE', '/api/v1/grants/' + encodeURIComponent(id));
    if (answer.status === 0 || answer.status >= 500) state.unended.push(id);
  }

  // Grants whose summary the page masked while the link was down, ended now.
  async function endMaskedGrants() {
    for (const id of state.unended.splice(0)) await endGrant(id);
  }

  // Without the event stream a pulled card would go unnoticed: fail closed. An access on
  // its way is dropped too (its answer would be shown with nothing to hide it).
  function lost(events) {
    state.following = false;
    // Written as it appears, so that screen readers announce it.
    $('link-state').textContent = LINK_DOWN;
    $('link-state').hidden = false;
    if (state.grant) {
      // Ended on the record once the link is back: masked here, it must not stay open
      // there until it expires.
      state.unended.push(state.grant.id);
      clearPatientData();
      show('patient');
      message('Liaison avec le serveur interrompue : la synthèse a été masquée par sécurité. Recommencez la demande.');
    } else {
      // The case's patients and a search's candidates are patient data too; the case
      // comes back with the stream.
      if (state.accessOnItsWay) {
        message('Liaison avec le serveur interrompue : la demande a été abandonnée par sécurité. Recommencez-la.');
      }
      if (state.accessOnItsWay || state.case || $('candidates').childElementCount) {
        state.cleared += 1;
        clearCase();
        $('candidates').replaceChildren();
      }
    }
    // The browser reconnects on its own after a network error, and the first event then
    // restores the desk's state. After an answer other than 200 (a gateway stopping or
    // starting, a proxy's error page) it gives up for good: the page opens it again.
    if (events.readyState === EventSource.CLOSED) {
      setTimeout(follow, reopenDelay);
      reopenDelay = Math.min(reopenDelay * 2, 15000);
    }
  }

  function deskChanged(event) {
    let signal = {};
    try { signal = JSON.parse(event.data); } catch (_) { signal = {}; }
    // Session over, or another session than the one the data was shown under (a quick
    // card swap whose two changes reached the page as one event): patient data leaves
    // the page now, before anything else happens.
    const otherSession = state.epoch !== undefined && signal.epoch !== state.epoch;
    if (!signal.session || otherSession) clearPatientData();
    if (signal.session && otherSession) {
      show('patient');
      message(OTHER_SESSION);
    }
    state.epoch = signal.session ? signal.epoch : undefined;
    // The regulation software closed or replaced the case shown (maybe by the same
    // case sent again, corrected): it leaves the page; the desk's current one is
    // fetched as the desk is shown again.
    state.caseVersion = signal.case_version === null ? undefined : signal.case_version;
    state.caseId = signal.case || null;
    if (state.case && (state.case.case_id !== (signal.case || null) || state.case.version !== signal.case_version)) clearCase();
    // The stream's first event is the desk's state: from here a change is seen.
    if (!state.following) {
      state.following = true;
      $('link-state').hidden = true;
      $('link-state').textContent = '';
      for (const waiting of state.onFollowing.splice(0)) waiting();
    }
    refreshDesk();
  }

  // Whether the event stream tells the desk's changes, waiting up to `ms` for it to be
  // back (the browser tries again every few seconds after a network error).
  function following(ms) {
    if (state.following) return Promise.resolve(true);
    return new Promise((resolve) => {
      const back = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        state.onFollowing = state.onFollowing.filter((w) => w !== back);
        resolve(false);
      }, ms);
      state.onFollowing.push(back);
    });
  }

  async function start() {
    // The page going away (reloaded, closed) closes the document tabs it opened: reloaded,
    // it would no longer know them.
    window.addEventListener('pagehide', () => {
      for (const tab of state.tabs.splice(0)) tab.close();
    });
    // A page the browser brings back from its back/forward cache would show its old
    // summary until the next event: it starts again from the desk's state instead.
    window.addEventListener('pageshow', (event) => {
      if (!event.persisted) return;
      if (state.grant) state.unended.push(state.grant.id);
      clearPatientData();
      refreshDesk().then(endMaskedGrants);
    });
    $('pin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const pin = $('pin').value;
      if (!/^[0-9]{4,8}$/.test(pin)) {
        message('Le code PIN compte de 4 à 8 chiffres.');
        $('pin').focus();
        return;
      }
      // The card blocks after the last try: it is spent only when the physician says so.
      if (state.lastTry && !$('last-try').checked) {
        message('Dernier essai : cochez la case pour confirmer, ou retirez la carte.');
        $('last-try').focus();
        return;
      }
      login(state.lastTry ? { pin, last_try_confirmed: true } : { pin });
    });
    $('pinpad-start').addEventListener('click', () => {
      $('card-detail').textContent = 'Saisissez votre code sur le lecteur, puis validez sur le lecteur.';
      login(state.lastTry ? { last_try_confirmed: true } : {});
    });
    $('ins').addEventListener('input', showInsCheck);
    // A reset form shows no verdict on an INS it no longer holds.
    $('access-form').addEventListener('reset', () => setTimeout(showInsCheck));
    $('traits-toggle').addEventListener('click', toggleTraits);
    $('traits-search').addEventListener('click', searchTraits);
    // Enter in a trait field searches instead of submitting the access.
    $('traits').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && event.target.tagName !== 'BUTTON') {
        event.preventDefault();
        searchTraits();
      }
    });
    $('reason').addEventListener('change', reasonChanged);
    $('reason-text').addEventListener('change', reasonChanged);
    $('access-form').addEventListener('submit', requestAccess);
    $('close-access').addEventListener('click', closeAccess);
    await begin();
    // The session's time left, kept current while one is open.
    setInterval(() => {
      if (state.desk && state.desk.session) refreshDesk();
    }, 30000);
  }

  // The desk is asked until it answers (a page loaded while the gateway starts, or before
  // the appliance booted), then followed. A workstation that is no desk (403: a compliance
  // officer's) stops there: its stream would be refused every few seconds for ever.
  async function begin() {
    await fetchToken();
    await refreshDesk();
    if (state.desk) follow();
    else if (state.deskStatus !== 403) setTimeout(begin, 5000);
  }

  document.addEventListener('DOMContentLoaded', start);
})();

// The compliance view: break-glass accesses to review, each one's records, the decision
// form. Audit metadata only (no clinical content ever reaches this page); every read is
// itself recorded by the gateway. No inline code (CSP), nothing from outside the gateway.
'use strict';

(() => {
  const { $, api, fetchToken, message, element } = window.samuPage;
  // `replaces`: the open access's latest decision, which a decision taken now replaces.
  // `decisionsAsked`: the latest reading of the decisions, the only one shown.
  const state = { accesses: [], open: null, asked: null, replaces: null, decisionsAsked: 0 };

  function when(text) {
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return text || '';
    return date.toLocaleString('fr-FR', { dateStyle: 'short', timeStyle: 'medium' });
  }

  const MODES = { centre_15: 'Centre 15', bris_de_glace: 'Bris de glace' };
  const DECISIONS = { justified: 'Justifié', to_investigate: 'À investiguer', unjustified: 'Injustifié' };
  const KINDS = {
    user_login: 'Connexion par carte',
    break_glass_started: 'Début de l\u2019accès',
    patient_record_read: 'Lecture de la synthèse',
    break_glass_stopped: 'Fin de l\u2019accès',
    access_reviewed: 'Décision de revue',
    security_alert: 'Alerte',
  };

  async function load() {
    const answer = await api('GET', '/api/v1/compliance/pending');
    if (answer.status !== 200) {
      // The list shown before is not kept beside the error: after a decision it would
      // still show the access just decided as to review.
      state.accesses = [];
      document.querySelector('#accesses tbody').replaceChildren();
      $('count').textContent = 'Liste des accès à revoir indisponible.';
      message((answer.data && answer.data.message_fr) || 'Accès refusé.');
      return;
    }
    message('');
    state.accesses = answer.data.accesses;
    sayRestores(answer.data.restores || []);
    render();
  }

  // A restored trail lacks the records written between its backup and its restore: a
  // review that does not know it could take an absence on the trail for an absence of
  // accesses.
  function sayRestores(restores) {
    const banner = $('restores');
    banner.hidden = restores.length === 0;
    banner.textContent = restores.length === 0 ? '' :
      'Cette trace a été restaurée depuis une sauvegarde ' +
      restores.map((r) => 'le ' + when(r.time) +
        (r.backup_taken ? ' (sauvegarde du ' + when(r.backup_taken) + ')' : '') +
        (r.backup_head ? ', jusqu\u2019à l\u2019enregistrement n° ' + r.backup_head : '')).join(' ; ') +
      '. Les enregistrements écrits entre la sauvegarde et la restauration ne sont pas ici : ' +
      'l\u2019informatique du centre les garde dans l\u2019ancien magasin mis de côté sur l\u2019appliance.';
  }

  function visible() {
    const text = $('filter-text').value.trim().toLowerCase();
    // Midnight where the officer is: a bare date would be read as midnight UTC, and the
    // accesses of the night's first hours in France would drop out of the list.
    const since = $('filter-since').value ? new Date($('filter-since').value + 'T00:00').getTime() : null;
    const decision = $('filter-decision').value;
    return state.accesses.filter((a) => {
      const haystack = [a.name, a.professional, a.desk, a.call_id].join(' ').toLowerCase();
      if (text && !haystack.includes(text)) return false;
      if (since !== null && new Date(a.time).getTime() < since) return false;
      if (decision === 'none' && a.last_decision) return false;
      if (decision === 'to_investigate' && a.last_decision !== 'to_investigate') return false;
      return true;
    });
  }

  // A table row of `cells`, then the button that opens access `seq`.
  function accessRow(cells, seq) {
    const row = element('tr');
    for (const text of cells) row.append(element('td', null, text || '—'));
    const action = element('td');
    const open = element('button', 'small', 'Examiner');
    open.type = 'button';
    open.setAttribute('aria-label', 'Examiner l\u2019accès n° ' + seq);
    open.addEventListener('click', () => openAccess(seq));
    action.append(open);
    row.append(action);
    return row;
  }

  function render() {
    const rows = visible().map((a) => {
      const cells = [
        when(a.time),
        [a.name, a.professional].filter(Boolean).join(' · '),
        a.desk,
        a.call_id,
        [a.reason_code, a.justification].filter(Boolean).join(' : '),
        MODES[a.access_mode] || a.access_mode,
        DECISIONS[a.last_decision] || 'À revoir',
      ];
      return accessRow(cells, a.seq);
    });
    document.querySelector('#accesses tbody').replaceChildren(...rows);
    const total = state.accesses.length;
    $('count').textContent = rows.length === total
      ? total + ' accès à revoir'
      : rows.length + ' accès affichés sur ' + total + ' à revoir';
  }

  // Who took a decision and its record's number, after what it was.
  function decidedBy(decision, who, seq) {
    return '« ' + (DECISIONS[decision] || decision) + ' »' + (who ? ' par ' + who : '') +
      (seq !== null && seq !== undefined ? ' (n° ' + seq + ')' : '');
  }

  // `kept`: the decision and comment typed before, put back when the access is shown again
  // because another decision came in meanwhile. Whether the access is now shown.
  async function openAccess(seq, kept) {
    // The last access clicked is the one shown (and decided on): an earlier click's
    // answer arriving later must not take its place under the decision form.
    state.asked = seq;
    const answer = await api('GET', '/api/v1/compliance/accesses/' + encodeURIComponent(seq));
    if (state.asked !== seq) return false;
    if (answer.status !== 200) {
      message((answer.data && answer.data.message_fr) || 'Accès introuvable.');
      return false;
    }
    state.open = seq;
    const access = answer.data.access;
    $('detail-title').textContent = 'Accès n° ' + seq + ' du ' + when(access.time);
    const facts = [
      ['Professionnel', [access.name, access.professional].filter(Boolean).join(' · ')],
      ['Poste', access.desk],
      ['Patient (INS)', access.ins],
      ['Appel', access.call_id],
      ['Motif', [access.reason_code, access.justification].filter(Boolean).join(' : ')],
      ['Mode', MODES[access.access_mode] || access.access_mode],
      ['Dernière décision', access.last_decision
        ? decidedBy(access.last_decision, access.last_decided_by, access.last_decision_seq)
        : 'aucune'],
    ];
    $('detail-facts').replaceChildren(...facts.flatMap(([term, value]) =>
      [element('dt', null, term), element('dd', null, value || '—')]));
    $('trail').replaceChildren(...answer.data.records.map((r) => {
      const record = r.record;
      const outcome = record.outcome.status === 'success' ? '' :
        ' — ' + (record.outcome.status === 'refused' ? 'refusé' : 'échec') + ' (' + record.outcome.reason + ')';
      const extra = [record.detail, record.source ? 'source : ' + record.source : null,
        // Who decided, beside what: a later decision replaces an earlier one, and the
        // trail must say whose each was.
        record.review ? DECISIONS[record.review.decision] +
          (record.actor && record.actor.name ? ' par ' + record.actor.name : '') +
          (record.review.comment ? ' : ' + record.review.comment : '') : null]
        .filter(Boolean).join(' · ');
      return element('li', null, when(record.time) + ' · n° ' + r.seq + ' · ' +
        (KINDS[record.kind] || record.kind) + outcome + (extra ? ' · ' + extra : ''));
    }));
    $('review-form').reset();
    state.replaces = access.last_decision_seq ?? null;
    // Said before it is done: a decision on an access already decided replaces that one
    // (both stay on the trail).
    $('replaces').hidden = state.replaces === null;
    $('replaces').textContent = state.replaces === null ? '' :
      'Votre décision remplacera la dernière, ' +
      decidedBy(access.last_decision, access.last_decided_by, access.last_decision_seq) +
      ', qui reste dans la trace.';
    if (kept) {
      const again = document.querySelector('input[name="decision"][value="' + kept.decision + '"]');
      if (again) again.checked = true;
      $('comment').value = kept.comment;
    }
    $('detail').hidden = false;
    $('detail-title').focus();
    return true;
  }

  async function decide(event) {
    event.preventDefault();
    const chosen = document.querySelector('input[name="decision"]:checked');
    if (!chosen) {
      message('Choisissez une décision.');
      return;
    }
    // One decision per click: a second click while the first is on its way would record
    // two reviews.
    const submit = event.target.querySelector('button[type="submit"], button:not([type])');
    if (submit) submit.disabled = true;
    // What this decision is about, as the officer saw it: another access may be opened
    // while it is on its way (the answer can take seconds).
    const seq = state.open;
    const typed = { decision: chosen.value, comment: $('comment').value };
    let answer;
    try {
      answer = await api('POST', '/api/v1/compliance/reviews', {
        seq,
        decision: typed.decision,
        comment: typed.comment,
        replaces: state.replaces,
      });
    } finally {
      if (submit) submit.disabled = false;
    }
    const shown = state.asked === seq;
    const error = answer.data && answer.data.error;
    if (answer.status === 409 && (error === 'already_decided' || error === 'decision_changed')) {
      // Another officer decided meanwhile: their decision is shown before this one may
      // replace it, with what was typed kept (on this access only: never carried over
      // to another one opened since). Said once it is shown: otherwise the reopening's
      // own error stands.
      if (!shown) {
        message('Décision non enregistrée sur l\u2019accès n° ' + seq + ' : une autre décision a été prise entre-temps. Rouvrez-le pour la lire.');
      } else if (await openAccess(seq, typed)) {
        message(answer.data.message_fr);
      }
      return;
    }
    if (answer.status !== 201) {
      message((answer.data && answer.data.message_fr) || 'Décision non enregistrée.');
      return;
    }
    message('');
    if (shown) $('detail').hidden = true;
    await load();
    await loadDecisions();
    $('filter-text').focus();
  }

  // The decisions since the chosen day (the last seven days without one), newest first,
  // so that an access already closed can be found, read again and its decision replaced.
  // Read page by page through the trail's search; past five pages, the officer is asked
  // for a later day rather than shown a list missing its newest decisions.
  async function loadDecisions() {
    // A reading started earlier (another day chosen since) must not replace this one.
    state.decisionsAsked += 1;
    const asked = state.decisionsAsked;
    const day = $('filter-since').value;
    const since = day ? new Date(day + 'T00:00') : new Date(Date.now() - 7 * 86400000);
    // A date the browser takes but no time can be made of (a year past 9999): said, and
    // the previous period's list not left under it.
    if (Number.isNaN(since.getTime()) || since.getUTCFullYear() > 9999) {
      document.querySelector('#decisions tbody').replaceChildren();
      $('decisions-count').textContent = 'Date invalide : choisissez un autre jour.';
      return;
    }
    const found = [];
    let after = null;
    let more = false;
    for (let pages = 0; ; pages += 1) {
      if (pages === 5) {
        more = true;
        break;
      }
      const filter = { kind: 'access_reviewed', outcome: 'success', since: since.toISOString() };
      if (after !== null) filter.after = after;
      const answer = await api('POST', '/api/v1/compliance/search', { filter, limit: 1000 });
      if (asked !== state.decisionsAsked) return;
      if (answer.status !== 200) {
        document.querySelector('#decisions tbody').replaceChildren();
        $('decisions-count').textContent = 'Décisions récentes indisponibles.';
        return;
      }
      found.push(...answer.data.records);
      after = answer.data.next_after ?? null;
      if (after === null) break;
    }
    if (more) {
      document.querySelector('#decisions tbody').replaceChildren();
      $('decisions-count').textContent = 'Trop de décisions depuis cette date : choisissez un jour plus récent.';
      return;
    }
    const replaced = new Map();
    for (const r of found) {
      const review = r.record.review;
      if (review && review.replaces !== undefined && review.replaces !== null) replaced.set(review.replaces, r.seq);
    }
    const rows = found.slice().reverse().map((r) => {
      const record = r.record;
      const review = record.review || {};
      const later = replaced.get(r.seq);
      const cells = [
        when(record.time),
        (DECISIONS[review.decision] || review.decision) +
          (later !== undefined ? ' (remplacée par n° ' + later + ')' : ''),
        record.actor && record.actor.name,
        'n° ' + review.of,
        review.comment,
      ];
      return accessRow(cells, review.of);
    });
    document.querySelector('#decisions tbody').replaceChildren(...rows);
    $('decisions-count').textContent = found.length === 0
      ? 'Aucune décision sur cette période.'
      : found.length + ' décision' + (found.length > 1 ? 's' : '') + ' sur cette période';
  }

  // The whole trail as a file. The gateway records the export, then gives a one-use
  // link to it that the browser's own download follows: the file goes to disk as it
  // comes (read here into a blob, a year's trail filled the tab's memory first), and a
  // transfer cut short (a damaged record stops an export under way) is a failed download
  // in the browser's list, never a whole-looking file.
  async function exportTrail() {
    const format = $('export-format').value;
    const button = $('export');
    button.disabled = true;
    const ask = () => fetch('/api/v1/compliance/downloads', {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'content-type': 'application/json', 'x-csrf-token': window.samuPage.csrfToken() },
      body: JSON.stringify({ format }),
    });
    try {
      let response = await ask();
      // A token from before a gateway restart: fetched again, and asked once more (as api()).
      if (response.status === 403) {
        let code = null;
        try { code = (await response.clone().json()).error; } catch (_) { code = null; }
        if (code === 'csrf_refused') {
          await fetchToken();
          response = await ask();
        }
      }
      let answer = null;
      try { answer = await response.json(); } catch (_) { answer = null; }
      if (!response.ok || !answer || typeof answer.href !== 'string') {
        message((answer && answer.message_fr) || 'Export refusé (' + response.status + ').');
        return;
      }
      const link = element('a');
      link.href = answer.href;
      // The gateway names the file (Content-Disposition).
      link.download = '';
      document.body.append(link);
      link.click();
      link.remove();
      // The browser's download list shows its progress, and a failure as such.
      message('');
    } catch (_) {
      message('Export impossible : serveur injoignable. Si cela se reproduit, prévenez l\u2019informatique du centre.');
    } finally {
      button.disabled = false;
    }
  }

  // The times shown are the workstation's; exports and the trail are in UTC. Said on the
  // page, with the offset of the day, so a time compared with an export or with another
  // centre's is not read an hour off.
  function sayZone() {
    const offset = -new Date().getTimezoneOffset();
    const pad = (n) => String(Math.floor(n)).padStart(2, '0');
    const utc = 'UTC' + (offset < 0 ? '−' : '+') + pad(Math.abs(offset) / 60) + ':' + pad(Math.abs(offset) % 60);
    let name = null;
    try { name = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (_) { name = null; }
    $('zone').textContent = 'Heures affichées à l\u2019heure de ce poste (' +
      (name ? name + ', ' : '') + utc + ' aujourd\u2019hui) ; les exports sont en UTC.';
  }

  async function start() {
    sayZone();
    for (const id of ['filter-text', 'filter-since', 'filter-decision']) {
      $(id).addEventListener('input', render);
    }
    // Each reading is recorded on the trail: a date stepped through with the arrow keys
    // is read once it settles, not at each step.
    let settling = null;
    $('filter-since').addEventListener('change', () => {
      clearTimeout(settling);
      settling = setTimeout(loadDecisions, 500);
    });
    $('filters').addEventListener('submit', (event) => event.preventDefault());
    $('review-form').addEventListener('submit', decide);
    $('export').addEventListener('click', exportTrail);
    await fetchToken();
    await load();
    await loadDecisions();
  }

  document.addEventListener('DOMContentLoaded', start);
})();

// What both pages share: talking to the gateway (with the CSRF token on every change),
// the message line, building elements as text (never as markup). Loaded before each
// page's own script.
'use strict';

window.samuPage = (() => {
  const $ = (id) => document.getElementById(id);
  let csrf = '';

  // `waitMs`: how long before the gateway counts as unreachable (see `send`).
  async function api(method, path, body, waitMs) {
    const answer = await send(method, path, body, waitMs);
    // The token is the gateway process's: after a restart every change is refused until
    // the page fetches the new one. The refusal comes before anything is done, so the
    // request is sent once more with it.
    if (answer.status === 403 && answer.data && answer.data.error === 'csrf_refused') {
      await fetchToken();
      return send(method, path, body, waitMs);
    }
    return answer;
  }

  async function send(method, path, body, waitMs) {
    const headers = { accept: 'application/json' };
    const options = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    if (method !== 'GET') headers['x-csrf-token'] = csrf;
    // A gateway that stopped answering (frozen, a link silently dropped) must not leave a
    // request waiting for ever: past a minute (longer than any access takes) it is
    // unreachable, as a refused connection is. A card login waits longer (its caller
    // says so): it may take `cards.login_timeout_secs` plus the time to type on a PIN pad.
    if (window.AbortSignal && AbortSignal.timeout) options.signal = AbortSignal.timeout(waitMs || 60000);
    let response;
    try {
      response = await fetch(path, options);
    } catch (_) {
      return { status: 0, data: { message_fr: 'Serveur injoignable. Vérifiez le réseau et réessayez.' } };
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    return { status: response.status, data };
  }

  // Fetches this page's CSRF token (readable by this origin only).
  async function fetchToken() {
    const answer = await send('GET', '/api/v1/csrf-token');
    csrf = (answer.data && answer.data.token) || '';
  }

  function refusal(answer) {
    return (answer.data && answer.data.message_fr) || 'Erreur inattendue (' + answer.status + ').';
  }

  function message(text) {
    $('message').textContent = text || '';
    $('message').hidden = !text;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // For calls that want the raw answer (a file), not JSON.
  const csrfToken = () => csrf;

  return { $, api, csrfToken, fetchToken, refusal, message, element };
})();

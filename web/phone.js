// sipward's reference web phone: domain -> login options -> IdP sign-in in a pop-up
// (Authorization Code + PKCE, state and nonce checked) -> device credential from the token API
// -> REGISTER over WebSocket with JsSIP -> calls; renews the credential before refresh_after;
// sign out deletes the device. No framework; see web/README.md.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  // The token API: this page's origin (sipward serves the page), or ?api=<origin> when the
  // page is hosted elsewhere (that origin must then be in sipward's http.cors_origins).
  const API = params.get('api') || window.location.origin;
  const DEVICE_KEY = 'sipward.device_id';
  // ?debug=1: JsSIP's own log (every SIP message) in the browser console.
  if (params.get('debug') === '1') JsSIP.debug.enable('JsSIP:*');
  else JsSIP.debug.disable();

  const state = {
    domain: null,
    method: null, // the chosen login method from login-options
    accessToken: null,
    credential: null,
    ua: null,
    session: null,
    renewTimer: null,
  };

  function log(line) {
    const el = $('log');
    el.textContent += `${new Date().toISOString().slice(11, 19)} ${line}\n`;
    el.scrollTop = el.scrollHeight;
  }

  function fail(message) {
    $('error').textContent = message;
    log(`error: ${message}`);
  }

  function show(step) {
    for (const id of ['step-domain', 'step-login', 'step-phone']) $(id).hidden = id !== step;
  }

  function b64url(bytes) {
    let s = '';
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function randomString(n) {
    return b64url(crypto.getRandomValues(new Uint8Array(n)));
  }

  // The device id stays in this browser, so signing in again renews the same device.
  function deviceId() {
    let id = localStorage.getItem(DEVICE_KEY);
    if (!id) {
      id = `web-${randomString(12)}`.replace(/[^A-Za-z0-9._-]/g, '');
      localStorage.setItem(DEVICE_KEY, id);
    }
    return id;
  }

  async function api(path, init) {
    const r = await fetch(`${API}${path}`, { credentials: 'omit', ...init });
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
    if (!r.ok) throw new Error(`${path}: ${r.status} ${body && (body.error_description || body.error) || ''}`);
    return body;
  }

  // Step 1: the domain's login options.
  async function next() {
    $('error').textContent = '';
    const domain = $('domain').value.trim().toLowerCase();
    if (!domain) return fail('Enter your company domain.');
    try {
      const options = await api(`/v1/login-options?domain=${encodeURIComponent(domain)}`);
      state.domain = domain;
      $('login-domain').textContent = domain;
      const methods = $('methods');
      methods.textContent = '';
      options.methods.forEach((m, i) => {
        const b = document.createElement('button');
        b.id = `signin-${i}`;
        b.textContent = `Sign in with ${m.label || m.issuer}`;
        b.disabled = !m.authorization_endpoint || !m.token_endpoint;
        b.addEventListener('click', () => signIn(m));
        methods.appendChild(b);
      });
      if (!options.methods.length) fail(`${domain} offers no sign-in this phone can use.`);
      log(`login options for ${domain}: ${options.methods.length} method(s), sso ${options.sso}`);
      show('step-login');
    } catch (e) {
      fail(`No login options for ${domain}: ${e.message}`);
    }
  }

  // Step 2: Authorization Code + PKCE in a pop-up; resolves with the token response.
  async function signIn(method) {
    $('error').textContent = '';
    state.method = method;
    const verifier = randomString(32);
    const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    const expectState = randomString(16);
    const nonce = randomString(16);
    const redirectUri = method.redirect_uri_pattern.replace('{origin}', window.location.origin);
    const url = new URL(method.authorization_endpoint);
    const q = {
      response_type: 'code',
      client_id: method.client_id,
      redirect_uri: redirectUri,
      scope: method.scopes.join(' '),
      state: expectState,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      resource: method.audience,
    };
    for (const [k, v] of Object.entries(q)) url.searchParams.set(k, v);
    const popup = window.open(url.toString(), 'sipward-sign-in', 'width=480,height=640');
    if (!popup) return fail('The sign-in pop-up was blocked.');
    log('sign-in pop-up opened');
    const result = await new Promise((resolve) => {
      const onMessage = (ev) => {
        if (ev.origin !== window.location.origin || !ev.data || ev.data.type !== 'sipward-auth') return;
        window.removeEventListener('message', onMessage);
        resolve(ev.data);
      };
      window.addEventListener('message', onMessage);
    });
    if (result.error) return fail(`Sign-in refused: ${result.error} ${result.error_description || ''}`);
    if (result.state !== expectState) return fail('Sign-in answer with a wrong state: ignored.');
    try {
      const body = new URLSearchParams({
        grant_type: 'authorization_code',
        code: result.code,
        redirect_uri: redirectUri,
        client_id: method.client_id,
        code_verifier: verifier,
        resource: method.audience,
      });
      const r = await fetch(method.token_endpoint, { method: 'POST', body, credentials: 'omit' });
      const tokens = await r.json();
      if (!r.ok) throw new Error(`${tokens.error} ${tokens.error_description || ''}`);
      // The ID token came straight from the token endpoint; its nonce must be ours.
      if (tokens.id_token) {
        const claims = JSON.parse(atob(tokens.id_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
        if (claims.nonce !== nonce) throw new Error('the ID token has a wrong nonce');
      } else if (method.scopes.includes('openid')) {
        throw new Error('no ID token');
      }
      state.accessToken = tokens.access_token;
      log('signed in at the IdP');
      await obtainCredential();
    } catch (e) {
      fail(`Sign-in failed: ${e.message}`);
    }
  }

  // Step 3: the device credential (a renewal uses the same device id).
  async function obtainCredential() {
    const cred = await api('/v1/sip/credentials', {
      method: 'POST',
      headers: { authorization: `Bearer ${state.accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ device_id: deviceId(), device_name: 'Web phone', platform: 'web' }),
    });
    const renewing = state.credential !== null;
    state.credential = cred;
    log(`credential for ${cred.sip.aor} (device ${cred.device_id}), refresh after ${cred.refresh_after} s`);
    clearTimeout(state.renewTimer);
    state.renewTimer = setTimeout(renew, Math.max(5, cred.refresh_after) * 1000);
    if (renewing && state.ua) {
      state.ua.set('password', cred.sip.password);
      state.ua.register();
    } else {
      await register();
    }
  }

  async function renew() {
    try {
      await obtainCredential();
      log('credential renewed');
    } catch (e) {
      fail(`Could not renew the credential (${e.message}); sign in again.`);
    }
  }

  // Step 4: REGISTER over WebSocket.
  async function register() {
    const cfg = await api('/phone/config.json');
    const urls = cfg.websocket_urls || [];
    if (!urls.length) throw new Error('sipward has no WebSocket listener');
    const cred = state.credential.sip;
    const sockets = urls.map((u) => new JsSIP.WebSocketInterface(u));
    const ua = new JsSIP.UA({
      sockets,
      uri: cred.aor,
      authorization_user: cred.username,
      password: cred.password,
      realm: cred.realm,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: 'sipward-web-phone',
    });
    state.ua = ua;
    $('aor').textContent = cred.aor;
    $('reg-state').textContent = 'registering';
    // Events of a UA that was signed out (state.ua replaced) change nothing on the page.
    const current = () => state.ua === ua;
    ua.on('registered', () => { if (current()) { $('reg-state').textContent = 'registered'; log('registered'); } });
    ua.on('unregistered', () => { if (current()) { $('reg-state').textContent = 'not registered'; log('unregistered'); } });
    ua.on('registrationFailed', (e) => {
      if (!current()) return;
      $('reg-state').textContent = 'failed';
      fail(`Registration failed: ${e.cause}`);
    });
    ua.on('newRTCSession', (e) => onSession(e.session, e.originator));
    ua.start();
    show('step-phone');
  }

  function setCall(text) {
    $('call-state').textContent = text;
    $('hangup').hidden = !['calling', 'ringing', 'in call'].includes(text);
  }

  function onSession(session, originator) {
    if (state.session) {
      if (originator === 'remote') session.terminate({ status_code: 486 });
      return;
    }
    state.session = session;
    const peer = session.remote_identity.uri.toString();
    session.on('peerconnection', (e) => {
      e.peerconnection.addEventListener('track', (t) => { $('remote-audio').srcObject = t.streams[0]; });
    });
    session.on('progress', () => setCall(originator === 'remote' ? 'ringing' : 'ringing'));
    session.on('confirmed', () => { setCall('in call'); log(`in call with ${peer}`); });
    const done = (e) => {
      setCall('ended');
      $('incoming').hidden = true;
      log(`call ended: ${e.cause}`);
      state.session = null;
    };
    session.on('ended', done);
    session.on('failed', done);
    if (originator === 'remote') {
      $('incoming-from').textContent = peer;
      $('incoming').hidden = false;
      setCall('ringing');
      log(`incoming call from ${peer}`);
    } else {
      setCall('calling');
      log(`calling ${peer}`);
    }
  }

  function answer() {
    if (!state.session) return;
    $('incoming').hidden = true;
    state.session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
  }

  function call() {
    const t = $('target').value.trim();
    if (!t || !state.ua) return;
    const target = t.includes('@') ? t : `${t}@${state.domain}`;
    state.ua.call(`sip:${target.replace(/^sip:/, '')}`, {
      mediaConstraints: { audio: true, video: false },
      pcConfig: { iceServers: [] },
    });
  }

  function hangup() {
    if (state.session) state.session.terminate();
  }

  // Sign out: the device is deleted (its credential and bindings go), then the UA stops.
  async function signOut() {
    clearTimeout(state.renewTimer);
    try {
      if (state.credential && state.accessToken) {
        await api(`/v1/sip/devices/${encodeURIComponent(state.credential.device_id)}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${state.accessToken}` },
        });
        log('device deleted');
      }
    } catch (e) {
      fail(`Sign-out: ${e.message}`);
    }
    if (state.ua) state.ua.stop();
    state.ua = null;
    state.credential = null;
    state.accessToken = null;
    $('reg-state').textContent = 'signed out';
    show('step-domain');
  }

  $('next').addEventListener('click', next);
  $('domain').addEventListener('keydown', (e) => { if (e.key === 'Enter') next(); });
  $('call').addEventListener('click', call);
  $('answer').addEventListener('click', answer);
  $('decline').addEventListener('click', () => state.session && state.session.terminate({ status_code: 486 }));
  $('hangup').addEventListener('click', hangup);
  $('signout').addEventListener('click', signOut);
})();

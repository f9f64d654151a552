// The test IdP's interactive sign-in for the web phone (web/). DEVELOPMENT AND TESTS ONLY:
// anyone who types a user name is signed in as that user, with no password.
//
// - webPhoneRedirects(): the web phone's redirect URIs, registered for the `softphone` client
//   (a public client: Authorization Code + PKCE). IDP_WEB_PHONE_REDIRECTS (comma-separated)
//   overrides the default, which suits `sipward run` with the dev profile and
//   `http.serve_web_phone = true` on 127.0.0.1:8080.
// - interactionUrl(): where oidc-provider sends a browser that must sign in.
// - handleInteraction(): GET /interaction/:uid shows a form with one field (#username) and one
//   button (#sign-in); POST /interaction/:uid/login signs that user in and grants the requested
//   OpenID scopes plus `sip` on the API resource, so the code exchange returns an access token
//   sipward accepts (and an ID token with the page's nonce). IDP_DEBUG=1 logs each step's
//   prompt and parameters to stderr.

const DEFAULT_REDIRECTS = [
  'http://127.0.0.1:8080/phone/callback.html',
  'http://localhost:8080/phone/callback.html',
];

export function webPhoneRedirects() {
  const env = process.env.IDP_WEB_PHONE_REDIRECTS;
  if (!env) return DEFAULT_REDIRECTS;
  return env.split(',').map((s) => s.trim()).filter(Boolean);
}

export function interactionUrl(ctx, interaction) {
  return `/interaction/${interaction.uid}`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 4096) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function page(res, status, body) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:",
  });
  res.end(`<!doctype html><html><head><meta charset="utf-8"><title>Test IdP sign-in</title>
<style>body{font-family:sans-serif;max-width:24em;margin:3em auto}input,button{font-size:1.1em;margin:.3em 0}</style>
</head><body>${body}</body></html>`);
}

// Returns true when it handled the request.
export async function handleInteraction(provider, audience, req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
  if (!m) return false;
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== m[1]) {
      page(res, 400, '<p>This sign-in has expired. Start again from the phone.</p>');
      return true;
    }
    if (process.env.IDP_DEBUG) process.stderr.write(`interaction ${JSON.stringify(details.prompt)} ${JSON.stringify(details.params)}\n`);
    if (req.method === 'GET' && !m[2]) {
      const client = escapeHtml(details.params.client_id);
      page(res, 200, `<h1>Test IdP</h1><p>Sign in to <b>${client}</b> (development only: no password).</p>
<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">
<label>User name <input id="username" name="username" autocomplete="username" autofocus required pattern="[A-Za-z0-9._\\-]{1,64}"></label><br>
<button id="sign-in" type="submit">Sign in</button></form>`);
      return true;
    }
    if (req.method === 'POST' && m[2]) {
      const form = await readForm(req);
      const accountId = form.get('username') ?? '';
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(accountId)) {
        page(res, 400, '<p>A user name of letters, digits, dot, dash or underscore, please.</p>');
        return true;
      }
      const { Grant } = provider;
      const grant = new Grant({ accountId, clientId: details.params.client_id });
      const requested = String(details.params.scope ?? 'openid');
      // The provider lists sip and admin among its scopes too, so they are granted as such
      // and on the API resource (the access token's audience).
      const oidcScopes = requested.split(' ').filter((s) => ['openid', 'offline_access', 'sip', 'admin'].includes(s));
      grant.addOIDCScope(oidcScopes.join(' ') || 'openid');
      const apiScopes = requested.split(' ').filter((s) => ['sip', 'admin'].includes(s));
      grant.addResourceScope(String(details.params.resource ?? audience), apiScopes.join(' ') || 'sip');
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, {
        login: { accountId },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
      return true;
    }
    page(res, 405, '<p>Method not allowed.</p>');
  } catch (err) {
    page(res, 400, `<p>Sign-in failed: ${escapeHtml(err.message ?? err)}</p>`);
  }
  return true;
}

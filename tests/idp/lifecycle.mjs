// Issue 20 test endpoints of the test IdP (imported by server.mjs): the IdP sends a real
// OpenID Back-Channel Logout 1.0 logout token to a relying party, signed with its own keys.
//
//   POST /test/lifecycle/backchannel-logout
//        {"target": "http://127.0.0.1:N/oidc/backchannel-logout", "aud": "softphone",
//         "sub": "alice", "sid": "...", "jti": "...", "nonce": "...", "alg": "ES256"|"RS256"|"none",
//         "events": false (omit the events claim), "exp_in": seconds (default 120)}
//   → {"status": <the RP's HTTP status>, "body": <its body text>, "jti": <the jti sent>}
import crypto from 'node:crypto';

const EVENT = 'http://schemas.openid.net/event/backchannel-logout';

function logoutToken(keys, issuer, o) {
  const now = Math.floor(Date.now() / 1000);
  const alg = o.alg ?? 'ES256';
  const payload = {
    iss: issuer,
    aud: o.aud ?? 'softphone',
    iat: now,
    exp: now + (o.exp_in ?? 120),
    jti: o.jti ?? crypto.randomUUID(),
  };
  if (o.sub !== undefined) payload.sub = o.sub;
  if (o.sid !== undefined) payload.sid = o.sid;
  if (o.nonce !== undefined) payload.nonce = o.nonce;
  if (o.events !== false) payload.events = { [EVENT]: {} };
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  if (alg === 'none') {
    return { token: `${b64({ alg: 'none', typ: 'logout+jwt' })}.${b64(payload)}.`, jti: payload.jti };
  }
  const key = keys.find((k) => k.alg === alg);
  const input = `${b64({ alg, typ: 'logout+jwt', kid: key.kid })}.${b64(payload)}`;
  const privateKey = crypto.createPrivateKey({ key: key.privateJwk, format: 'jwk' });
  const signature = alg === 'ES256'
    ? crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
    : crypto.sign('sha256', Buffer.from(input), privateKey);
  return { token: `${input}.${signature.toString('base64url')}`, jti: payload.jti };
}

export async function lifecycleEndpoint(req, res, url, { keys, issuer, json, readJson }) {
  if (url.pathname === '/test/lifecycle/backchannel-logout' && req.method === 'POST') {
    const o = await readJson(req);
    const { token, jti } = logoutToken(keys, issuer, o);
    // As an OP sends it (Back-Channel Logout 1.0 §2.5): a form POST, no cookies.
    const r = await fetch(o.target, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: token }).toString(),
    });
    return json(res, 200, { status: r.status, body: await r.text(), jti });
  }
  return json(res, 404, { error: 'not found' });
}

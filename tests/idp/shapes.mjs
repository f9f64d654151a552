// Provider shapes for the test IdP (imported by server.mjs): access tokens that look like
// Entra ID v2, Okta (custom authorization server: JWT; org authorization server: opaque),
// Keycloak, Auth0 and Google's, each under its own issuer on this same server, with the
// discovery document, RFC 7662 introspection and OIDC userinfo/tokeninfo endpoints those
// providers serve. TEST ONLY: it mints tokens for any user without a password.
//
// Issuers (ORIGIN is http://127.0.0.1:PORT, or the HTTPS origin the request came in on):
//   entra     ORIGIN/entra/{tid}/v2.0        JWT typ "JWT", scp string, azp, tid, ver "2.0"
//   entra-v1  ORIGIN/sts/{tid}/              JWT typ "JWT", appid, ver "1.0" (sts.windows.net form)
//   okta      ORIGIN/okta/oauth2/default     JWT without typ, scp array, cid, uid, ver 1
//   okta-org  ORIGIN/okta                    opaque; introspection at /okta/oauth2/v1/introspect
//                                            (aud is the org URL; OIDC scopes only)
//   keycloak  ORIGIN/keycloak/realms/corp    JWT typ "JWT" (payload typ "Bearer"), azp,
//                                            realm_access.roles, resource_access.<client>.roles
//   auth0     ORIGIN/auth0/                  JWT typ "at+jwt", permissions array, azp, org_id,
//                                            namespaced claims
//   google    ORIGIN/google                  opaque; /google/userinfo, /google/tokeninfo
// Every issuer serves {issuer}/.well-known/openid-configuration; the JWT issuers publish the
// server's own keys (jwks_uri ORIGIN/jwks, so /test/jwks modes apply to them too).
//
// Test endpoints:
//   POST /shapes/mint    {"shape": S, "user": "alice", "origin": ORIGIN?, "ttl": 3600?,
//                         "set": {claims to set}, "remove": [claims to drop],
//                         "header": {header fields to set}, "opaque": bool?}
//                        → {"token", "issuer", "claims"}; okta-org and google are always opaque
//                        (any shape may be made opaque: its claims answer introspection)
//   POST /shapes/revoke  {"token"} → introspection answers {"active": false} from now on
//   POST /shapes/mode    {"introspection": "ok" | "down" | "error"} → how introspection,
//                        userinfo and tokeninfo answer ("down": the socket is closed;
//                        "error": HTTP 500)
//   GET  /shapes/stats   {"introspections": N, "userinfo": N, "tokeninfo": N,
//                         "per_token": {sha256(token) hex prefix: N}, "auth_failures": N}
// Introspection client authentication (client_secret_basic): client "sipward" with the
// secret in IDP_INTROSPECTION_SECRET (default "introspection-secret-for-tests").
import crypto from 'node:crypto';

export const INTROSPECTION_CLIENT = 'sipward';
const INTROSPECTION_SECRET = process.env.IDP_INTROSPECTION_SECRET ?? 'introspection-secret-for-tests';

export const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
export const ENTRA_API = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
export const ENTRA_CLIENT = '0ca1b8f2-5e3a-4b1a-9d7e-3f1a2b3c4d5e';

const opaque = new Map(); // token → { shape, issuer, claims, active }
const MAX_OPAQUE = 10_000;
let mode = 'ok';
const stats = { introspections: 0, userinfo: 0, tokeninfo: 0, per_token: {}, auth_failures: 0 };

function json(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function originOf(req) {
  return `${req.socket.encrypted ? 'https' : 'http'}://${req.headers.host}`;
}

function tokenHash(token) {
  return crypto.createHash('sha256').update(token).digest('hex').slice(0, 16);
}

const randomId = (n = 8) => crypto.randomBytes(n).toString('hex');
const uuid = () => crypto.randomUUID();

// The issuer path of each shape (after the origin).
function issuerPath(shape, tid = TENANT) {
  switch (shape) {
    case 'entra': return `/entra/${tid}/v2.0`;
    case 'entra-v1': return `/sts/${tid}/`;
    case 'okta': return '/okta/oauth2/default';
    case 'okta-org': return '/okta';
    case 'keycloak': return '/keycloak/realms/corp';
    case 'auth0': return '/auth0/';
    case 'google': return '/google';
    default: return null;
  }
}

// Header and claims as the provider sends them, for `user` (a bare name such as "alice").
function shapeToken(shape, user, issuer, ttl) {
  const now = Math.floor(Date.now() / 1000);
  const email = `${user}@example.test`;
  switch (shape) {
    case 'entra':
      return {
        header: { typ: 'JWT', alg: 'RS256' },
        claims: {
          aud: ENTRA_API, iss: issuer, iat: now, nbf: now, exp: now + ttl,
          aio: randomId(), azp: ENTRA_CLIENT, azpacr: '0', name: user, oid: uuid(),
          preferred_username: email, rh: randomId(), scp: 'sip.register User.Read',
          sub: randomId(16), tid: TENANT, uti: randomId(), ver: '2.0',
        },
      };
    case 'entra-v1':
      return {
        header: { typ: 'JWT', alg: 'RS256' },
        claims: {
          aud: `api://${ENTRA_API}`, iss: issuer, iat: now, nbf: now, exp: now + ttl,
          appid: ENTRA_CLIENT, appidacr: '0', oid: uuid(), scp: 'sip.register',
          sub: randomId(16), tid: TENANT, upn: email, unique_name: email, ver: '1.0',
        },
      };
    case 'okta-org':
      return {
        header: { alg: 'RS256' },
        claims: {
          ver: 1, jti: `AT.${randomId(12)}`, iss: issuer, aud: issuer, iat: now,
          exp: now + ttl, cid: '0oa1softphone', uid: `00u${randomId(6)}`,
          scp: ['openid', 'profile', 'email'], auth_time: now, sub: email,
        },
      };
    case 'okta':
      return {
        header: { alg: 'RS256' },
        claims: {
          ver: 1, jti: `AT.${randomId(12)}`, iss: issuer, aud: 'api://sipward', iat: now,
          exp: now + ttl, cid: '0oa1softphone', uid: `00u${randomId(6)}`,
          scp: ['openid', 'sip'], auth_time: now, sub: email,
        },
      };
    case 'keycloak':
      return {
        header: { alg: 'RS256', typ: 'JWT' },
        claims: {
          exp: now + ttl, iat: now, auth_time: now, jti: uuid(), iss: issuer,
          aud: ['sipward-api', 'account'], sub: uuid(), typ: 'Bearer', azp: 'softphone',
          session_state: uuid(), acr: '1', sid: uuid(),
          realm_access: { roles: ['offline_access', 'uma_authorization', 'default-roles-corp'] },
          resource_access: {
            'sipward-api': { roles: ['sip-register'] },
            account: { roles: ['manage-account', 'view-profile'] },
          },
          scope: 'openid email profile', email_verified: true, name: user,
          preferred_username: user, email,
        },
      };
    case 'auth0':
      return {
        header: { alg: 'RS256', typ: 'at+jwt' },
        claims: {
          iss: issuer, sub: `auth0|${randomId(12)}`,
          aud: ['https://sipward.example.test/api', `${issuer}userinfo`], iat: now,
          exp: now + ttl, scope: 'openid profile email', azp: 'AuTh0SoFtPhOnEcLiEnT',
          permissions: ['sip:register'], org_id: 'org_corp123',
          'https://sipward.example.test/email': email,
          'https://sipward.example.test/email_verified': true,
          jti: randomId(12), client_id: 'AuTh0SoFtPhOnEcLiEnT',
        },
      };
    case 'google':
      return {
        header: {},
        claims: {
          iss: 'https://accounts.google.com', azp: '1234567890-softphone.apps.googleusercontent.com',
          aud: '1234567890-softphone.apps.googleusercontent.com', sub: String(100000000000 + Math.floor(Math.random() * 1e9)),
          scope: 'openid https://www.googleapis.com/auth/userinfo.email', email,
          email_verified: true, hd: 'example.test', iat: now, exp: now + ttl,
        },
      };
    default:
      return null;
  }
}

function sign(keys, header, payload) {
  const key = keys.find((k) => k.alg === header.alg);
  const full = { ...header, kid: header.kid ?? key.kid };
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b64(full)}.${b64(payload)}`;
  const privateKey = crypto.createPrivateKey({ key: key.privateJwk, format: 'jwk' });
  const signature = key.alg === 'ES256'
    ? crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
    : crypto.sign('sha256', Buffer.from(input), privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

function discovery(origin, base) {
  const issuer = `${origin}${base}`;
  const doc = {
    issuer,
    jwks_uri: `${origin}/jwks`,
    authorization_endpoint: `${issuer.replace(/\/$/, '')}/authorize`,
    token_endpoint: `${issuer.replace(/\/$/, '')}/token`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
  };
  if (base === '/okta' || base === '/okta/oauth2/default') {
    doc.introspection_endpoint = `${origin}${base}${base === '/okta' ? '/oauth2' : ''}/v1/introspect`;
  }
  if (base === '/keycloak/realms/corp') {
    doc.introspection_endpoint = `${issuer}/protocol/openid-connect/token/introspect`;
  }
  if (base === '/google') doc.userinfo_endpoint = `${origin}/google/userinfo`;
  return doc;
}

function countCall(kind, token) {
  stats[kind] += 1;
  const h = tokenHash(token ?? '');
  stats.per_token[h] = (stats.per_token[h] ?? 0) + 1;
}

// Returns true when the failure mode answered the request.
function failing(req, res) {
  if (mode === 'down') { req.socket.destroy(); return true; }
  if (mode === 'error') { json(res, 500, { error: 'server_error' }); return true; }
  return false;
}

function basicAuthOk(req) {
  const h = req.headers.authorization ?? '';
  if (!h.startsWith('Basic ')) return false;
  const [id, secret] = Buffer.from(h.slice(6), 'base64').toString('utf8').split(':');
  const want = Buffer.from(INTROSPECTION_SECRET);
  const got = Buffer.from(decodeURIComponent(secret ?? ''));
  return decodeURIComponent(id ?? '') === INTROSPECTION_CLIENT
    && got.length === want.length && crypto.timingSafeEqual(got, want);
}

function activeEntry(token) {
  const entry = opaque.get(token);
  const now = Math.floor(Date.now() / 1000);
  if (!entry || !entry.active || entry.claims.exp <= now) return null;
  return entry;
}

async function introspect(req, res) {
  const body = new URLSearchParams(await readBody(req));
  const token = body.get('token') ?? '';
  countCall('introspections', token);
  if (failing(req, res)) return;
  if (!basicAuthOk(req)) {
    stats.auth_failures += 1;
    return json(res, 401, { error: 'invalid_client' }, { 'www-authenticate': 'Basic realm="idp"' });
  }
  const entry = activeEntry(token);
  if (!entry) return json(res, 200, { active: false });
  const c = entry.claims;
  const answer = { active: true, token_type: 'Bearer', ...c };
  // Okta's org server answers scope as a string and names the client `client_id`.
  if (Array.isArray(c.scp)) { answer.scope = c.scp.join(' '); delete answer.scp; }
  if (c.cid && !c.client_id) { answer.client_id = c.cid; delete answer.cid; }
  if (!answer.username) answer.username = c.preferred_username ?? c.sub;
  return json(res, 200, answer);
}

function bearer(req) {
  const h = req.headers.authorization ?? '';
  return h.startsWith('Bearer ') ? h.slice(7) : '';
}

function userinfo(req, res) {
  const token = bearer(req);
  countCall('userinfo', token);
  if (failing(req, res)) return;
  const entry = activeEntry(token);
  if (!entry) {
    return json(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
  }
  const { sub, email, email_verified: verified, hd, name } = entry.claims;
  const info = { sub, email, email_verified: verified, name };
  if (hd) info.hd = hd;
  return json(res, 200, info);
}

async function tokeninfo(req, res, url) {
  const form = req.method === 'POST' ? new URLSearchParams(await readBody(req)) : url.searchParams;
  const token = form.get('access_token') ?? '';
  countCall('tokeninfo', token);
  if (failing(req, res)) return;
  const entry = activeEntry(token);
  if (!entry) return json(res, 400, { error_description: 'Invalid Value' });
  const c = entry.claims;
  const now = Math.floor(Date.now() / 1000);
  // Google sends numbers as strings here.
  return json(res, 200, {
    azp: c.azp, aud: c.aud, sub: c.sub, scope: c.scope, exp: String(c.exp),
    expires_in: String(c.exp - now), email: c.email, email_verified: String(c.email_verified),
    access_type: 'online',
  });
}

async function mint(req, res, keys) {
  const p = JSON.parse((await readBody(req)) || '{}');
  const shape = p.shape;
  const base = issuerPath(shape, p.tid);
  if (!base) return json(res, 400, { error: 'unknown shape' });
  const origin = p.origin ?? originOf(req);
  const issuer = `${origin}${base}`;
  const made = shapeToken(shape, p.user ?? 'alice', issuer, Number(p.ttl ?? 3600));
  const claims = { ...made.claims, ...(p.set ?? {}) };
  for (const name of p.remove ?? []) delete claims[name];
  const header = { ...made.header, ...(p.header ?? {}) };
  const isOpaque = p.opaque ?? (shape === 'okta-org' || shape === 'google');
  if (isOpaque) {
    if (opaque.size >= MAX_OPAQUE) opaque.clear();
    const prefix = shape === 'google' ? 'ya29.' : '';
    const token = `${prefix}${crypto.randomBytes(32).toString('base64url')}`;
    opaque.set(token, { shape, issuer, claims, active: true });
    return json(res, 200, { token, issuer: shape === 'google' ? `${origin}/google` : issuer, claims });
  }
  return json(res, 200, { token: sign(keys(), header, claims), issuer, claims });
}

// Handles the shapes' routes; returns false for any other path.
export function shapeRoute(req, res, url, keys) {
  const path = url.pathname;
  const run = (promise) => { Promise.resolve(promise).catch((err) => json(res, 500, { error: String(err) })); return true; };
  if (path === '/shapes/mint' && req.method === 'POST') return run(mint(req, res, keys));
  if (path === '/shapes/revoke' && req.method === 'POST') {
    return run(readBody(req).then((t) => {
      const entry = opaque.get(JSON.parse(t).token);
      if (entry) entry.active = false;
      json(res, 200, { revoked: Boolean(entry) });
    }));
  }
  if (path === '/shapes/mode' && req.method === 'POST') {
    return run(readBody(req).then((t) => {
      const m = JSON.parse(t).introspection;
      if (!['ok', 'down', 'error'].includes(m)) return json(res, 400, { error: 'bad mode' });
      mode = m;
      return json(res, 200, { introspection: mode });
    }));
  }
  if (path === '/shapes/stats' && req.method === 'GET') return run(json(res, 200, stats));
  if (!/^\/(entra|sts|okta|keycloak|auth0|google)(\/|$)/.test(path)) return false;
  if (path.endsWith('/.well-known/openid-configuration')) {
    const base = path.slice(0, -'/.well-known/openid-configuration'.length);
    const known = ['/okta/oauth2/default', '/okta', '/keycloak/realms/corp', '/auth0', '/google']
      .includes(base) || /^\/entra\/[^/]+\/v2\.0$/.test(base) || /^\/sts\/[^/]+$/.test(base);
    if (!known) return run(json(res, 404, { error: 'not found' }));
    const issuerBase = base === '/auth0' || base.startsWith('/sts/') ? `${base}/` : base;
    return run(json(res, 200, discovery(originOf(req), issuerBase), { 'cache-control': 'max-age=300' }));
  }
  if (req.method === 'POST' && (path.endsWith('/v1/introspect') || path.endsWith('/token/introspect'))) {
    return run(introspect(req, res));
  }
  if (path === '/google/userinfo') return run(userinfo(req, res));
  if (path === '/google/tokeninfo') return run(tokeninfo(req, res, url));
  return run(json(res, 404, { error: 'not found' }));
}

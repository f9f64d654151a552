// A real OpenID provider (the npm package oidc-provider, OpenID Certified) for sipward's token
// API tests and for trying the API by hand. TEST ONLY: it mints tokens for any user name
// without a password. It listens on 127.0.0.1 only.
//
//   node tests/idp/server.mjs            # port from IDP_PORT (default 4400; 0 = any free port)
//
// On start it prints one JSON line to stdout: {"issuer": "...", "port": N}.
//
// What it does:
// - RS256 and ES256 signing keys (generated at start), published at /jwks.
// - RFC 9068 `at+jwt` access tokens through resource indicators (RFC 8707): the audience is
//   the requested resource (IDP_AUDIENCE, default urn:sipward:api).
// - A test-only grant that mints an access token for a named user, no browser:
//     POST /token  grant_type=urn:sipward:params:oauth:grant-type:test-mint
//                  client_id=softphone  username=alice  resource=urn:sipward:api  scope=sip
//     optional: alg=RS256|ES256 (default ES256), groups=a,b (a `groups` claim),
//               tid=tenant (a `tid` claim), ttl=seconds (default 3600)
// - Test endpoints (plain JSON, outside the provider):
//     GET  /test/keys    the public keys as PEM and DER (for algorithm-confusion tests)
//     POST /test/sign    {"header": {...}, "payload": {...}} signed with the provider's own key
//                        for header.alg (header.kid picks one): valid signatures on bad claims
//     POST /test/rotate  {"action": "add"} publishes a new RS256+ES256 pair and signs with it;
//                        {"action": "drop"} removes every older key
//     POST /test/jwks    {"mode": "ok" | "down" | "slow" | "junk" | "single" | "padded" |
//                        "unusable", "count": N} how /jwks answers: "single" publishes only the
//                        newest ES256 key; "padded" puts N (default 100) entries that parse as
//                        keys but cannot verify an allowed signature (alg RS512, a 64-bit RSA
//                        modulus, a P-256 key labelled ES384) ahead of the real keys;
//                        "unusable" publishes only those N entries
//     GET  /test/stats   {"jwks_requests": N, "discovery_requests": N}
// - Provider-shaped tokens and their introspection/userinfo endpoints: tests/idp/shapes.mjs.
// - With IDP_TLS_CERT and IDP_TLS_KEY (PEM files) it also serves everything over HTTPS on
//   IDP_TLS_PORT (0 = any free port), given in the start line as "tls_port".
// - An interactive sign-in page for the web phone (user name only), in tests/idp/webphone.mjs.
//     POST /test/lifecycle/…  issue 20: back-channel logout tokens sent to sipward (lifecycle.mjs)
import http from 'node:http';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

import Provider, { errors } from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

// Provider shapes (Entra, Okta, Keycloak, Auth0, Google): tokens, introspection, userinfo.
import { shapeRoute } from './shapes.mjs';
// The web phone's sign-in page and redirect URIs (tests/idp/webphone.mjs).
import { handleInteraction, interactionUrl, webPhoneRedirects } from './webphone.mjs';
import { lifecycleEndpoint } from './lifecycle.mjs';

const PORT = Number(process.env.IDP_PORT ?? 4400);
const AUDIENCE = process.env.IDP_AUDIENCE ?? 'urn:sipward:api';
const MINT = 'urn:sipward:params:oauth:grant-type:test-mint';

let keys = []; // newest first: { kid, alg, privateJwk, publicJwk, publicKey }
let jwksMode = 'ok';
let padCount = 100;
const stats = { jwks_requests: 0, discovery_requests: 0 };
let keyCounter = 0;

async function newKey(alg) {
  keyCounter += 1;
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${alg.toLowerCase()}-${keyCounter}-${crypto.randomBytes(4).toString('hex')}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateJwk, publicJwk, publicKey };
}

async function addKeyPair() {
  const pair = [await newKey('ES256'), await newKey('RS256')];
  keys = [...pair, ...keys];
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'softphone',
        token_endpoint_auth_method: 'none',
        application_type: 'native',
        grant_types: [MINT, 'authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback', ...webPhoneRedirects()],
      },
      {
        client_id: 'other-app',
        token_endpoint_auth_method: 'none',
        application_type: 'native',
        grant_types: [MINT],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys: keys.map((k) => k.privateJwk) },
    scopes: ['openid', 'offline_access', 'sip', 'admin'],
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
    interactions: { url: interactionUrl },
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => ({
          scope: 'sip admin',
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    async extraTokenClaims(ctx, token) {
      const params = ctx?.oidc?.params ?? {};
      const extra = { preferred_username: token.accountId };
      if (params.groups) extra.groups = String(params.groups).split(',').filter(Boolean);
      if (params.tid) extra.tid = String(params.tid);
      return extra;
    },
    async findAccount(ctx, id) {
      return { accountId: id, async claims() { return { sub: id, preferred_username: id }; } };
    },
  });
  provider.registerGrantType(MINT, mintGrant, ['username', 'scope', 'resource', 'alg', 'groups', 'tid', 'ttl']);
  return provider;
}

async function mintGrant(ctx) {
  const { client, params } = ctx.oidc;
  const { AccessToken, Grant, ResourceServer } = ctx.oidc.provider;
  const accountId = params.username;
  if (!accountId) throw new errors.InvalidRequest('username is required');
  const resource = params.resource || AUDIENCE;
  const scope = params.scope || 'sip';
  const alg = params.alg || 'ES256';
  if (!['ES256', 'RS256'].includes(alg)) throw new errors.InvalidRequest('alg must be ES256 or RS256');
  const ttl = Number(params.ttl || 3600);
  const grant = new Grant({ accountId, clientId: client.clientId });
  grant.addResourceScope(resource, scope);
  const grantId = await grant.save();
  const at = new AccessToken({ accountId, client, grantId, gty: 'test_mint', scope });
  at.resourceServer = new ResourceServer(resource, {
    scope: 'sip admin',
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    jwt: { sign: { alg, kid: keys.find((k) => k.alg === alg).kid } },
  });
  const value = await at.save();
  ctx.body = { access_token: value, token_type: 'Bearer', expires_in: at.expiration, scope };
}

// Entries that look like keys but cannot verify an ES256/RS256 signature from this IdP.
function paddingEntries(n) {
  const rsa = keys.find((k) => k.alg === 'RS256').publicJwk;
  const ec = keys.find((k) => k.alg === 'ES256').publicJwk;
  const out = [];
  for (let i = 0; i < n; i += 1) {
    const kid = `pad-${i}`;
    if (i % 3 === 0) out.push({ kty: 'RSA', kid, use: 'sig', alg: 'RS512', n: rsa.n, e: rsa.e });
    else if (i % 3 === 1) out.push({ kty: 'RSA', kid, use: 'sig', n: 'AQAAAAAAAAE', e: 'AQAB' });
    else out.push({ kty: 'EC', kid, use: 'sig', alg: 'ES384', crv: 'P-256', x: ec.x, y: ec.y });
  }
  return out;
}

function publishedKeys() {
  const real = keys.map((k) => k.publicJwk);
  if (jwksMode === 'single') return [keys.find((k) => k.alg === 'ES256').publicJwk];
  if (jwksMode === 'padded') return [...paddingEntries(padCount), ...real];
  if (jwksMode === 'unusable') return paddingEntries(padCount);
  return null;
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

async function testEndpoint(req, res, url, rebuild) {
  if (url.pathname === '/test/keys' && req.method === 'GET') {
    return json(res, 200, {
      keys: keys.map((k) => ({
        kid: k.kid,
        alg: k.alg,
        jwk: k.publicJwk,
        pem: crypto.createPublicKey({ key: k.publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }),
        der_b64: crypto.createPublicKey({ key: k.publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'der' }).toString('base64'),
      })),
    });
  }
  if (url.pathname === '/test/sign' && req.method === 'POST') {
    const { header, payload } = await readJson(req);
    const key = keys.find((k) => k.alg === header.alg && (!header.kid || k.kid === header.kid))
      ?? keys.find((k) => k.alg === header.alg);
    if (!key) return json(res, 400, { error: 'no key for that alg' });
    // Signed by hand (not with jose) so that any header, `crit` included, can be tested.
    const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const input = `${b64(header)}.${b64(payload)}`;
    const privateKey = crypto.createPrivateKey({ key: key.privateJwk, format: 'jwk' });
    const signature = key.alg === 'ES256'
      ? crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
      : crypto.sign('sha256', Buffer.from(input), privateKey);
    return json(res, 200, { token: `${input}.${signature.toString('base64url')}`, kid: key.kid });
  }
  if (url.pathname === '/test/rotate' && req.method === 'POST') {
    const { action } = await readJson(req);
    if (action === 'add') await addKeyPair();
    else if (action === 'drop') keys = keys.slice(0, 2);
    else return json(res, 400, { error: 'action must be add or drop' });
    rebuild();
    return json(res, 200, { kids: keys.map((k) => k.kid) });
  }
  if (url.pathname === '/test/jwks' && req.method === 'POST') {
    const { mode, count } = await readJson(req);
    if (!['ok', 'down', 'slow', 'junk', 'single', 'padded', 'unusable'].includes(mode)) {
      return json(res, 400, { error: 'bad mode' });
    }
    jwksMode = mode;
    padCount = Number(count ?? 100);
    return json(res, 200, { mode });
  }
  if (url.pathname === '/test/stats' && req.method === 'GET') {
    return json(res, 200, stats);
  }
  if (url.pathname.startsWith('/test/lifecycle/')) {
    const issuer = `http://127.0.0.1:${req.socket.localPort}`;
    return lifecycleEndpoint(req, res, url, { keys, issuer, json, readJson });
  }
  return json(res, 404, { error: 'not found' });
}

async function main() {
  await addKeyPair();
  let provider;
  let callback;
  const handler = (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (shapeRoute(req, res, url, () => keys)) return;
    if (url.pathname.startsWith('/test/')) {
      testEndpoint(req, res, url, () => {
        provider = buildProvider(provider.issuer);
        callback = provider.callback();
      }).catch((err) => json(res, 500, { error: String(err) }));
      return;
    }
    if (url.pathname.startsWith('/interaction/')) {
      handleInteraction(provider, AUDIENCE, req, res);
      return;
    }
    if (url.pathname === '/.well-known/openid-configuration') stats.discovery_requests += 1;
    if (url.pathname === '/jwks') {
      stats.jwks_requests += 1;
      if (jwksMode === 'down') { req.socket.destroy(); return; }
      if (jwksMode === 'junk') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"keys": [ not json'); return; }
      if (jwksMode === 'slow') { setTimeout(() => callback(req, res), 10_000); return; }
      const published = publishedKeys();
      if (published) { json(res, 200, { keys: published }); return; }
    }
    callback(req, res);
  };
  const server = http.createServer(handler);
  const tls = process.env.IDP_TLS_CERT
    ? https.createServer({ cert: readFileSync(process.env.IDP_TLS_CERT), key: readFileSync(process.env.IDP_TLS_KEY) }, handler)
    : null;
  server.listen(PORT, '127.0.0.1', () => {
    const { port } = server.address();
    const issuer = `http://127.0.0.1:${port}`;
    provider = buildProvider(issuer);
    callback = provider.callback();
    if (!tls) { process.stdout.write(`${JSON.stringify({ issuer, port })}\n`); return; }
    tls.listen(Number(process.env.IDP_TLS_PORT ?? 0), '127.0.0.1', () => {
      process.stdout.write(`${JSON.stringify({ issuer, port, tls_port: tls.address().port })}\n`);
    });
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});

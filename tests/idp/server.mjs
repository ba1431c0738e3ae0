// A real OpenID Provider (panva's oidc-provider) for latchkey's integration tests.
//
// Usage: node server.mjs
//   IDP_PORT            port to listen on (127.0.0.1 only), required
//   IDP_ISSUER          issuer, default http://127.0.0.1:$IDP_PORT
//   IDP_KEYS_FILE       JSON file with the signing keys; generated if missing, required
//   IDP_ROTATE=1        prepend a fresh RS256 key to the keys file before starting
//   IDP_ID_TOKEN_TTL    ID token lifetime in seconds (default 600)
//   IDP_ACCESS_TOKEN_TTL access token lifetime in seconds (default: the ID token lifetime)
//
// Test users all have the password `latchkey-test`; users with MFA are asked for the one-time code
// `123456` after the password and get `amr: ["pwd", "mfa"]`. A login through the device flow gets
// `acr: "urn:latchkey:loa:device"` (OIDC has no standard mark of the grant that issued a token;
// this IdP marks it the way an IdP's own policy can, so the broker's `device_flow_acr` can be
// tested); other logins get `urn:latchkey:loa:pwd` or `urn:latchkey:loa:mfa`. `mallory` typed someone else's
// address, which this IdP never verified (`email_verified: false`).
//
// Claims follow a common IdP mapping: `email` and `email_verified` under the `email` scope,
// `preferred_username` and the custom `department` under `profile`, `groups` under its own scope.
// There is no `department` scope.
//
// Test-only endpoint: GET /__test/stats -> { "jwks_requests": N }.
// The process exits when its stdin closes, so it never outlives the test binary that started it.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const port = Number.parseInt(process.env.IDP_PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('IDP_PORT must be a TCP port');
  process.exit(2);
}
const issuer = process.env.IDP_ISSUER ?? `http://127.0.0.1:${port}`;
const keysFile = process.env.IDP_KEYS_FILE;
if (!keysFile) {
  console.error('IDP_KEYS_FILE must name the signing keys file');
  process.exit(2);
}
const idTokenTtl = positiveInt('IDP_ID_TOKEN_TTL', 600);
const accessTokenTtl = positiveInt('IDP_ACCESS_TOKEN_TTL', idTokenTtl);

const PASSWORD = 'latchkey-test';
const OTP = '123456';

const USERS = {
  alice: { email: 'alice@example.com', groups: ['engineering'], department: 'platform', mfa: false },
  bob: { email: 'bob@example.com', groups: ['engineering', 'sre'], department: 'platform', mfa: true },
  carol: { email: 'carol@example.com', groups: ['finance'], department: 'finance', mfa: false },
  dave: { email: 'dave@example.com', groups: ['engineering', 'prod-approvers'], department: 'security', mfa: true },
  erin: { email: 'erin@example.com', groups: ['auditors'], department: 'security', mfa: true },
  frank: { email: 'frank@example.com', groups: ['engineering', 'prod-approvers'], department: 'security', mfa: true },
  grace: { email: 'grace@example.com', groups: ['engineering'], department: 'platform', mfa: true },
  mallory: {
    email: 'ceo@example.com',
    emailVerified: false,
    username: 'mallory.m',
    groups: ['engineering'],
    department: 'platform',
    mfa: false,
  },
};

function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`${name} must be a positive integer`);
    process.exit(2);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Signing keys

function newKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = randomUUID();
  return {
    kid,
    alg,
    jwk: { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
    pkcs8_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
  };
}

function writeKeys(keys) {
  const tmp = `${keysFile}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, keysFile);
}

let keys;
if (existsSync(keysFile)) {
  ({ keys } = JSON.parse(readFileSync(keysFile, 'utf8')));
} else {
  keys = [newKey('RS256'), newKey('ES256')];
  writeKeys(keys);
}
if (process.env.IDP_ROTATE === '1') {
  // The provider signs with the first key of a matching algorithm, so the new key signs from now
  // on while the old ones stay published in the JWKS.
  keys = [newKey('RS256'), ...keys];
  writeKeys(keys);
}

// ---------------------------------------------------------------------------------------------
// The provider

const nativeClient = {
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://127.0.0.1/callback'],
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
};

const provider = new Provider(issuer, {
  clients: [
    { ...nativeClient, client_id: 'latchkey-cli', id_token_signed_response_alg: 'RS256' },
    { ...nativeClient, client_id: 'latchkey-cli-es', id_token_signed_response_alg: 'ES256' },
    { ...nativeClient, client_id: 'other-app', id_token_signed_response_alg: 'RS256' },
  ],
  jwks: { keys: keys.map((k) => k.jwk) },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub', 'auth_time', 'acr', 'amr'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    profile: ['preferred_username', 'department'],
  },
  scopes: ['openid', 'offline_access', 'email', 'groups', 'profile'],
  acrValues: ['urn:latchkey:loa:pwd', 'urn:latchkey:loa:mfa', 'urn:latchkey:loa:device'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: {
      enabled: true,
      userCodeInputSource,
      userCodeConfirmSource,
      successSource,
    },
    revocation: { enabled: true },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  ttl: {
    IdToken: idTokenTtl,
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 24 * 3600,
  },
  async findAccount(_ctx, id) {
    const user = Object.hasOwn(USERS, id) ? USERS[id] : undefined;
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: user.email,
          email_verified: user.emailVerified ?? true,
          preferred_username: user.username ?? id,
          groups: [...user.groups],
          department: user.department,
        };
      },
    };
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out))}</pre>`);
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// ---------------------------------------------------------------------------------------------
// Plain HTML pages: a headless HTTP client with a cookie jar can fill in every form.

function esc(value) {
  return String(value)
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>
`;
}

async function userCodeInputSource(ctx, form, _out, err) {
  const msg = err ? '<p id="error">The code is incorrect or was already used. Try again.</p>' : '<p>Enter the code displayed on your device.</p>';
  ctx.type = 'html';
  ctx.body = page('Device sign-in', `${msg}\n${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
  ctx.type = 'html';
  ctx.body = page('Confirm device', `<p>Client <strong>${esc(client.clientId)}</strong> shows the code <code>${esc(userCode)}</code>.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
}

async function successSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Sign-in Success', '<p id="success">You can now close this page.</p>');
}

function loginPage(uid, clientId, error) {
  return page('Sign-in', `${error ? `<p id="error">${esc(error)}</p>` : ''}<p>Sign in to <strong>${esc(clientId)}</strong>.</p>
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="text" name="login" autocomplete="username">
<input type="password" name="password" autocomplete="current-password">
<button type="submit">Sign in</button>
</form>`);
}

function otpPage(uid, token) {
  return page('Second factor', `<form method="post" action="/interaction/${esc(uid)}/otp">
<input type="hidden" name="mfa_token" value="${esc(token)}">
<input type="text" name="otp" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Verify</button>
</form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Authorize', `<p><strong>${esc(clientId)}</strong> asks for: ${esc(scopes.join(' '))}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm">
<input type="hidden" name="consent" value="yes">
<button type="submit">Allow</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort">
<button type="submit">Deny</button>
</form>`);
}

// ---------------------------------------------------------------------------------------------
// Interaction routes (login, second factor, consent)

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(html);
}

// Logins that passed the password step and wait for the one-time code, keyed by a random token.
const pendingMfa = new Map();

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    sendHtml(res, 400, page('Error', '<p id="error">interaction mismatch</p>'));
    return;
  }
  const { prompt, params, session } = details;
  const clientId = params.client_id;
  // The device flow resumes at /device/...; every other flow at /auth/...
  const deviceFlow = new URL(details.returnTo).pathname.startsWith('/device/');
  const acr = (level) => (deviceFlow ? 'urn:latchkey:loa:device' : `urn:latchkey:loa:${level}`);

  if (req.method === 'GET' && action === '') {
    if (prompt.name === 'login') {
      sendHtml(res, 200, loginPage(uid, clientId));
    } else if (prompt.name === 'consent') {
      sendHtml(res, 200, consentPage(uid, clientId, String(params.scope ?? '').split(' ')));
    } else {
      sendHtml(res, 501, page('Error', `<p id="error">prompt ${esc(prompt.name)} not implemented</p>`));
    }
    return;
  }
  if (req.method !== 'POST') {
    sendHtml(res, 405, page('Error', '<p id="error">method not allowed</p>'));
    return;
  }

  const form = await readForm(req);
  switch (action) {
    case 'login': {
      if (prompt.name !== 'login') break;
      const login = form.get('login') ?? '';
      const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
      if (!user || !safeEqual(form.get('password') ?? '', PASSWORD)) {
        sendHtml(res, 200, loginPage(uid, clientId, 'Invalid user or password.'));
        return;
      }
      if (user.mfa) {
        const token = randomBytes(24).toString('base64url');
        pendingMfa.set(token, { uid, accountId: login, ts: Math.floor(Date.now() / 1000), deviceFlow });
        sendHtml(res, 200, otpPage(uid, token));
        return;
      }
      await provider.interactionFinished(req, res, {
        login: { accountId: login, amr: ['pwd'], acr: acr('pwd') },
      }, { mergeWithLastSubmission: false });
      return;
    }
    case 'otp': {
      if (prompt.name !== 'login') break;
      const token = form.get('mfa_token') ?? '';
      const pending = pendingMfa.get(token);
      if (!pending || pending.uid !== uid) {
        sendHtml(res, 200, loginPage(uid, clientId, 'Start again.'));
        return;
      }
      if (!safeEqual(form.get('otp') ?? '', OTP)) {
        sendHtml(res, 200, otpPage(uid, token));
        return;
      }
      pendingMfa.delete(token);
      await provider.interactionFinished(req, res, {
        login: { accountId: pending.accountId, ts: pending.ts, amr: ['pwd', 'mfa'], acr: acr('mfa') },
      }, { mergeWithLastSubmission: false });
      return;
    }
    case 'confirm': {
      if (prompt.name !== 'consent') break;
      const { details: missing } = prompt;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId });
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      if (missing.missingResourceScopes) {
        for (const [indicator, scope] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scope.join(' '));
        }
      }
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    case 'abort': {
      await provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
      return;
    }
    default:
      break;
  }
  sendHtml(res, 400, page('Error', `<p id="error">unexpected ${esc(action || 'request')} for prompt ${esc(prompt.name)}</p>`));
}

// ---------------------------------------------------------------------------------------------
// HTTP server: test routes and interactions first, then the provider.

let jwksRequests = 0;
const jwksPath = new URL(`${issuer}/jwks`).pathname;
const providerCallback = provider.callback();
const interactionRoute = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|otp|confirm|abort))?$/;

const server = createServer((req, res) => {
  const { pathname } = new URL(req.url ?? '/', issuer);
  if (pathname === '/__test/stats' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ jwks_requests: jwksRequests }));
    return;
  }
  const m = interactionRoute.exec(pathname);
  if (m) {
    interaction(req, res, m[1], m[2] ?? '').catch((err) => {
      console.error('interaction error', err);
      if (!res.headersSent) sendHtml(res, 400, page('Error', `<p id="error">${esc(err.message)}</p>`));
    });
    return;
  }
  if (pathname === jwksPath) jwksRequests += 1;
  providerCallback(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.error(`idp listening on ${issuer} (${keys.length} keys, id token ttl ${idTokenTtl}s)`);
});

function shutdown(code) {
  server.close();
  process.exit(code);
}
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.stdin.on('end', () => shutdown(0));
process.stdin.on('close', () => shutdown(0));
process.stdin.on('error', () => shutdown(0));
process.stdin.resume();

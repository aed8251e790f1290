// A relying party built on panva's openid-client (a certified OpenID Connect RP library), in
// its default strict mode, run against our provider by tests/test_rp_node.py.
//
// Two steps, each one run of this script printing one JSON object on stdout:
//
//   node rp.mjs start  <issuer> <client_id> <client_secret> <redirect_uri> <scope>
//     discovery, then an authorization URL with PKCE (S256), state and nonce:
//     {"url", "code_verifier", "state", "nonce"}
//   node rp.mjs finish <issuer> <client_id> <client_secret> <callback_url> <code_verifier>
//                      <state> <nonce> <post_logout_redirect_uri>
//     the code exchange with the ID token validated (signature against the JWKS, iss, aud,
//     exp, iat, nonce), userinfo (its sub checked against the ID token's), a refresh when a
//     refresh token came, and the end-session URL:
//     {"claims", "userinfo", "refreshed", "end_session_url"}
//
// The only option is allowInsecureRequests: the test serves the provider over plain http on
// loopback. It relaxes nothing else. An error prints {"error", "code", "cause"} and exits 1.

import * as client from "openid-client";

async function configuration(issuer, clientId, clientSecret) {
  return client.discovery(new URL(issuer), clientId, clientSecret || undefined, undefined, {
    execute: [client.allowInsecureRequests],
  });
}

async function start([issuer, clientId, clientSecret, redirectUri, scope]) {
  const config = await configuration(issuer, clientId, clientSecret);
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: "S256",
    state,
    nonce,
  });
  return { url: url.href, code_verifier: codeVerifier, state, nonce };
}

async function finish([issuer, clientId, clientSecret, callback, codeVerifier, state, nonce, after]) {
  const config = await configuration(issuer, clientId, clientSecret);
  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  let refreshed = null;
  if (tokens.refresh_token) {
    const again = await client.refreshTokenGrant(config, tokens.refresh_token);
    refreshed = {
      rotated: again.refresh_token !== tokens.refresh_token,
      sub: again.claims()?.sub ?? null,
      userinfo: await client.fetchUserInfo(config, again.access_token, claims.sub),
    };
  }
  const endSessionUrl = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: after,
    state: "bye",
  });
  return { claims, userinfo, refreshed, end_session_url: endSessionUrl.href };
}

// An error's own fields, nested causes included (oauth4webapi puts the failed claim, its
// expected value and the response body there), without stacks.
function describe(value, depth = 0) {
  if (value === null || value === undefined || depth > 4) return null;
  if (typeof value !== "object") return value;
  const fields = {};
  for (const name of Object.getOwnPropertyNames(value)) {
    if (name !== "stack") fields[name] = describe(value[name], depth + 1);
  }
  return fields;
}

const [step, ...args] = process.argv.slice(2);
try {
  const steps = { start, finish };
  if (!steps[step]) throw new Error(`unknown step ${step}`);
  process.stdout.write(JSON.stringify(await steps[step](args)) + "\n");
} catch (error) {
  const answer = { error: String(error?.message ?? error), code: error?.code ?? null };
  answer.cause = describe(error?.cause);
  process.stdout.write(JSON.stringify(answer) + "\n");
  process.exit(1);
}

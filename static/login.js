// The login page: show a WeChat QR code, wait on a websocket for the scan,
// redeem the one-time code for a session, and show who is signed in.
//
//   GET /api/me ── 200 ──> signed-in view (after a sign-in, /api/me again while
//        │                 the unionid is looked up: "查询中…")
//        └─ else ─> attempt: POST /api/login/qrcode, then websocket frames
//                   "waiting" → "confirmed" (POST /api/login/redeem) | "expired" (new QR)
//
// With the message method on, the attempt also has a code to send to the account
// in WeChat, shown beside the account's follow QR code; with scan off, that QR
// code takes the login QR code's place. The socket and redeem are the same.
//
// Session cookies are HttpOnly: the page only ever sees the JSON answers.
//
// Shown by the OpenID provider (/oidc/login), the page signs in for an app: it
// always asks for a scan (the app may want a fresh one), names the app to the
// scanner, and once signed in goes on to the app's authorization by itself.

import { api } from './api.js';

// Set by /oidc/login: the authorization to go on to once signed in, and the
// waiting request whose app the scanner is told about.
const FOR_APP = {
  continueTo: document.body.dataset.continue ?? null,
  request: document.body.dataset.oidcRequest ?? null,
};

// Waits between websocket reconnects; the last one repeats.
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 5000];
// The server refuses the handshake for an expired scene, so this many
// refusals after the countdown ran out are its way of saying "expired".
const REFUSALS_MEANING_EXPIRED = 2;
// The server's "expired" frame decides; the local countdown only takes over
// this long after zero, for a connection that went silent or hangs.
const EXPIRY_GRACE_MS = 5000;
// After a sign-in the server looks the unionid up in the background (WeChat's
// user/info, up to a few seconds): ask again after each of these waits before
// calling the account unbound.
const UNIONID_RECHECKS_MS = [1000, 2000, 3000, 4000];

// The server's close code for a socket sent away because newer tabs of this
// browser wait on the same QR code (REPLACED_CLOSE_CODE in app/views/ws.py).
// Such a tab stops rather than reconnects, or tabs would send each other away
// in turn; it resumes when the person looks at it again.
const REPLACED_CLOSE_CODE = 4001;

const TEXT = {
  loadingQr: '正在获取二维码…',
  waiting: '请使用微信扫一扫登录',
  waitingForMessage: '在微信中发送验证码后，本页自动登录',
  scanned: '已扫码，请在微信中确认',
  confirmed: '扫码成功，正在登录…',
  reconnecting: '连接中断，正在重新连接…',
  expired: '二维码已失效',
  cancelled: '已取消登录',
  linking: '请用要绑定的微信扫码，并在微信中回复 1 确认绑定',
  notLinked: '没有绑定：扫码的微信取消了，或它已属于另一个账号。',
  continuing: '登录成功，正在返回应用…',
  unionidPending: '查询中…',
  replaced: '已在其他标签页打开',
  unionidMissing: '未绑定开放平台',
};

const DATE_TIME = new Intl.DateTimeFormat('zh-CN', { dateStyle: 'long', timeStyle: 'medium' });

const byId = (id) => document.getElementById(id);
const els = {
  login: byId('login'),
  qrFrame: byId('qr-frame'),
  spinner: byId('qr-spinner'),
  qrImage: byId('qr-image'),
  messageLogin: byId('message-login'),
  accountQr: byId('account-qr'),
  messageCode: byId('message-code'),
  overlay: byId('qr-overlay'),
  overlayText: byId('qr-overlay-text'),
  qrRefresh: byId('qr-refresh'),
  status: byId('status'),
  countdown: byId('countdown'),
  error: byId('error'),
  errorMessage: byId('error-message'),
  retry: byId('retry'),
  signedIn: byId('signed-in'),
  userOpenid: byId('user-openid'),
  userUnionid: byId('user-unionid'),
  userFirstLogin: byId('user-first-login'),
  userLastLogin: byId('user-last-login'),
  userLoginCount: byId('user-login-count'),
  userNickname: byId('user-nickname'),
  userAvatar: byId('user-avatar'),
  identities: byId('identities'),
  identityError: byId('identity-error'),
  linkOpenQr: byId('link-open-qr'),
  linkScan: byId('link-scan'),
  logout: byId('logout'),
};

// Where "绑定网站应用登录" starts a link (the website application is on), or undefined.
const OPEN_QR_LINK = document.body.dataset.openQr;
// How each method reads in the list of identities.
const METHOD_NAMES = {
  scan: '公众号扫码',
  message: '公众号验证码',
  wechat_browser: '微信内登录',
  open_qr: '网站应用扫码',
};

// Which parts of the page each state (body[data-state]) shows.
const VISIBLE_IN = {
  loading: ['login', 'qrFrame', 'spinner', 'status'],
  waiting: ['login', 'qrFrame', 'qrImage', 'status', 'countdown'],
  // Scanned, awaiting the scanner's "1" in WeChat: the QR is dimmed, nothing to click.
  scanned: ['login', 'qrFrame', 'qrImage', 'overlay', 'status', 'countdown'],
  expired: ['login', 'qrFrame', 'qrImage', 'overlay', 'qrRefresh', 'status'],
  cancelled: ['login', 'qrFrame', 'qrImage', 'overlay', 'qrRefresh', 'status'],
  replaced: ['login', 'qrFrame', 'qrImage', 'overlay', 'qrRefresh', 'status'],
  error: ['login', 'error'],
  'signed-in': ['signedIn'],
};
const TOGGLED = [...new Set(Object.values(VISIBLE_IN).flat())];

// The login attempt on screen, or null. Every async step checks that its
// attempt is still this one, so answers and frames for a replaced QR are dropped.
let attempt = null;
// What #retry does for the error on screen.
let retryAction = null;
// A new QR is due but the tab is hidden: fetch it once the tab is visible.
let qrDueWhenVisible = false;
// The next re-read of /api/me for a unionid still being looked up, or null.
let unionidTimer = null;
// True while the page shows a QR code to link a WeChat to the person signed in.
let linking = false;

// The code is read off the page while the attempt waits for it (or for the "1").
const MESSAGE_CODE_IN = ['waiting', 'scanned'];
// Shown in two groups for reading; no space between them, so a copy is the code.
const MESSAGE_CODE_GROUPS = [3];

function setState(state) {
  document.body.dataset.state = state;
  for (const name of TOGGLED) {
    els[name].hidden = !VISIBLE_IN[state].includes(name);
  }
  els.messageLogin.hidden = !(MESSAGE_CODE_IN.includes(state) && attempt?.messageCode);
}

function showMessageCode(a, qr) {
  a.messageCode = qr.message_code ?? null;
  a.scanOff = qr.qrcode == null;
  els.qrImage.alt = a.scanOff ? '公众号二维码' : '微信登录二维码';
  // With scan off, the frame already shows the account's QR code.
  els.accountQr.hidden = a.scanOff || !qr.account_qr;
  if (qr.account_qr && !a.scanOff) els.accountQr.src = qr.account_qr;
  const code = a.messageCode ?? '';
  const groups = [0, ...MESSAGE_CODE_GROUPS, code.length];
  els.messageCode.replaceChildren(
    ...groups.slice(1).map((end, i) => {
      const group = document.createElement('span');
      group.textContent = code.slice(groups[i], end);
      return group;
    }),
  );
}

function waitingText(a) {
  if (linking) return TEXT.linking;
  return a.scanOff && a.messageCode ? TEXT.waitingForMessage : TEXT.waiting;
}

// What the page asks of POST /api/login/qrcode: a sign-in for an app, a link,
// or a plain sign-in.
function attemptBody() {
  if (FOR_APP.request) return { oidc_request: FOR_APP.request };
  return linking ? { link: true } : undefined;
}

function setStatus(text) {
  els.status.textContent = text;
}

// Fetches a new QR now, or when the tab becomes visible: a QR nobody looks
// at would only expire unseen and cost a WeChat API call.
function requestQr() {
  if (document.visibilityState === 'visible') {
    newAttempt();
  } else {
    qrDueWhenVisible = true;
  }
}

async function newAttempt() {
  endAttempt();
  qrDueWhenVisible = false;
  const current = {
    ws: null, // the websocket URL for this QR's scene
    expiresAt: 0, // epoch milliseconds
    socket: null,
    reconnects: 0, // since the server last answered
    refusalsPastExpiry: 0,
    countdownTimer: null,
    reconnectTimer: null,
  };
  attempt = current;
  setState('loading');
  setStatus(TEXT.loadingQr);

  let qr;
  try {
    qr = await api('POST', '/api/login/qrcode', attemptBody());
  } catch (error) {
    if (current === attempt) showError(error.message, '重试', newAttempt);
    return;
  }
  if (current !== attempt) return;

  current.ws = qr.ws;
  setExpiry(current, qr.expires_in);
  showMessageCode(current, qr);
  els.qrImage.src = qr.image ?? '';
  els.qrImage.dataset.scene = qr.scene;
  setState('waiting');
  setStatus(waitingText(current));
  tick(current);
  current.countdownTimer = setInterval(() => tick(current), 1000);
  connect(current);
}

function setExpiry(a, expiresInSeconds) {
  if (Number.isFinite(expiresInSeconds)) {
    a.expiresAt = Date.now() + expiresInSeconds * 1000;
  }
}

function tick(a) {
  const left = a.expiresAt - Date.now();
  const seconds = Math.max(0, Math.ceil(left / 1000));
  const minutes = Math.floor(seconds / 60);
  const rest = String(seconds % 60).padStart(2, '0');
  els.countdown.textContent = `二维码将在 ${minutes}:${rest} 后失效`;
  if (left <= -EXPIRY_GRACE_MS) expire(a);
}

function connect(a) {
  const socket = new WebSocket(a.ws);
  a.socket = socket;
  socket.addEventListener('message', (event) => {
    if (a !== attempt || a.socket !== socket) return; // a socket we let go of
    a.reconnects = 0; // the server answered: the link is healthy again
    handleFrame(a, parseFrame(event.data));
  });
  // "error" is always followed by "close", so "close" alone drives reconnects.
  socket.addEventListener('close', (event) => {
    if (a !== attempt || a.socket !== socket) return;
    if (event.code === REPLACED_CLOSE_CODE) {
      stepAside(a);
    } else {
      reconnectLater(a);
    }
  });
}

function parseFrame(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

function reconnectLater(a) {
  const untilExpiry = a.expiresAt - Date.now();
  if (untilExpiry <= 0 && ++a.refusalsPastExpiry >= REFUSALS_MEANING_EXPIRED) {
    expire(a);
    return;
  }
  // Spread out by ±25 %: when a worker shuts down, all its pages reconnect at once.
  const backoff =
    RECONNECT_DELAYS_MS[Math.min(a.reconnects, RECONNECT_DELAYS_MS.length - 1)] *
    (0.75 + Math.random() / 2);
  a.reconnects += 1;
  // Never wait past the expiry: a scan confirmed in the last seconds is
  // answered at once on reconnect, and a refusal then means "expired".
  const delay = Math.max(RECONNECT_DELAYS_MS[0] * 0.75, Math.min(backoff, untilExpiry));
  setStatus(TEXT.reconnecting);
  a.reconnectTimer = setTimeout(() => connect(a), delay);
}

function handleFrame(a, frame) {
  switch (frame?.status) {
    case 'waiting':
      setExpiry(a, frame.expires_in); // the server's clock is the one that counts
      setStatus(waitingText(a));
      break;
    case 'scanned':
      showOverlay('scanned', TEXT.scanned);
      break;
    case 'confirmed':
      stopListening(a);
      redeem(a, frame.code);
      break;
    case 'expired':
      expire(a);
      break;
    case 'cancelled':
      stopListening(a);
      if (linking) {
        backFromLinking(TEXT.notLinked);
        break;
      }
      showOverlay('cancelled', TEXT.cancelled);
      break;
    default:
      // A status this page does not know yet: keep waiting for the next frame.
      break;
  }
}

// Newer tabs wait on this QR code: stop here, and take it up again (from the
// server, which sends the oldest other tab away) when this tab is looked at.
function stepAside(a) {
  stopListening(a);
  showOverlay('replaced', TEXT.replaced);
  qrDueWhenVisible = document.visibilityState !== 'visible';
}

function expire(a) {
  stopListening(a);
  showOverlay('expired', TEXT.expired);
  requestQr();
}

function showOverlay(state, text) {
  els.overlayText.textContent = text;
  setStatus(text);
  setState(state);
}

// Stops the countdown and any reconnect, and lets go of the socket (its
// "close" handler then sees it is no longer the attempt's socket).
function stopListening(a) {
  clearInterval(a.countdownTimer);
  clearTimeout(a.reconnectTimer);
  const socket = a.socket;
  a.socket = null;
  socket?.close();
}

function endAttempt() {
  if (attempt) stopListening(attempt);
  attempt = null;
}

async function redeem(a, code) {
  setState('loading');
  setStatus(TEXT.confirmed);
  let user;
  try {
    user = await api('POST', '/api/login/redeem', { code });
  } catch (error) {
    // Tabs of one browser share a QR code, and a code works once: another tab may have
    // signed this browser in already, or be about to (its answer may still be on its way).
    user = await signedInByAnotherTab();
    if (a === attempt && user === null) showError(error.message, '获取新二维码', newAttempt);
  }
  if (a !== attempt || user === null) return;
  linking = false;
  if (FOR_APP.continueTo) {
    endAttempt();
    setStatus(TEXT.continuing);
    window.location.replace(FOR_APP.continueTo); // back to the app's authorization
    return;
  }
  showSignedIn(user, { justSignedIn: true });
}

// The user another tab signed this browser in as, asked a few times over a
// second or so; null if none did.
async function signedInByAnotherTab() {
  for (const wait of [0, 300, 600]) {
    await new Promise((resolve) => setTimeout(resolve, wait));
    const user = await api('GET', '/api/me').catch(() => null);
    if (user !== null) return user;
  }
  return null;
}

// Shows the user; right after a sign-in a missing unionid may still be on its
// way, so it reads "查询中" and is asked for again.
function showSignedIn(user, { justSignedIn = false } = {}) {
  endAttempt();
  clearTimeout(unionidTimer);
  els.userOpenid.textContent = user.openid;
  showUnionid(user.unionid, justSignedIn);
  showTime(els.userFirstLogin, user.first_login_at);
  showTime(els.userLastLogin, user.last_login_at);
  els.userLoginCount.textContent = String(user.login_count);
  showProfile(user);
  showIdentities(user);
  setState('signed-in');
  if (justSignedIn && user.unionid == null) recheckUnionid(user.openid, 0);
}

function showProfile(user) {
  els.userNickname.textContent = user.nickname ?? '';
  els.userAvatar.hidden = !user.headimgurl;
  if (user.headimgurl) els.userAvatar.href = user.headimgurl;
}

// The person's identities, each with "解绑" while another remains; "绑定网站应用登录"
// while they have no website identity.
function showIdentities(user) {
  const identities = user.identities ?? [];
  els.identityError.hidden = true;
  els.identities.replaceChildren(
    ...identities.map((identity) => {
      const item = document.createElement('li');
      item.className = 'identity';
      item.dataset.method = identity.method;
      const label = document.createElement('span');
      label.textContent = `${METHOD_NAMES[identity.method] ?? identity.method}（${identity.openid}）`;
      item.append(label);
      if (identities.length > 1) {
        const unlink = document.createElement('button');
        unlink.type = 'button';
        unlink.className = 'button secondary unlink';
        unlink.textContent = '解绑';
        unlink.addEventListener('click', () => unlinkIdentity(identity.openid));
        item.append(' ', unlink);
      }
      return item;
    }),
  );
  els.linkOpenQr.hidden = !OPEN_QR_LINK || identities.some((i) => i.method === 'open_qr');
  // A person holds one Official Account identity: offered to one who has none.
  els.linkScan.hidden = user.openid != null;
}

async function unlinkIdentity(openid) {
  try {
    showSignedIn(await api('POST', '/api/me/identities/unlink', { openid }));
  } catch (error) {
    els.identityError.textContent = error.message;
    els.identityError.hidden = false;
  }
}

// "绑定公众号登录": a QR code whose scanner, once they confirm in WeChat, is
// linked to the person signed in here (the answer then signs this page in as
// the same person again).
function linkByScan() {
  linking = true;
  newAttempt();
}

async function backFromLinking(message) {
  linking = false;
  endAttempt();
  const user = await api('GET', '/api/me').catch(() => null);
  if (user === null) {
    requestQr();
    return;
  }
  showSignedIn(user);
  els.identityError.textContent = message;
  els.identityError.hidden = false;
}

async function linkOpenQr() {
  try {
    const answer = await api('POST', OPEN_QR_LINK);
    window.location.assign(answer.redirect);
  } catch (error) {
    els.identityError.textContent = error.message;
    els.identityError.hidden = false;
  }
}

function showUnionid(unionid, pending) {
  els.userUnionid.textContent = unionid ?? (pending ? TEXT.unionidPending : TEXT.unionidMissing);
  els.userUnionid.classList.toggle('muted', unionid == null);
}

function recheckUnionid(openid, round) {
  unionidTimer = setTimeout(async () => {
    const user = await api('GET', '/api/me').catch(() => null);
    // Signed out, or in as someone else, meanwhile: not this look-up's to show.
    if (document.body.dataset.state !== 'signed-in' || user?.openid !== openid) return;
    const more = user.unionid == null && round + 1 < UNIONID_RECHECKS_MS.length;
    showUnionid(user.unionid, more);
    // A unionid that arrived may have joined this person to their other identities.
    showProfile(user);
    showIdentities(user);
    if (more) recheckUnionid(openid, round + 1);
  }, UNIONID_RECHECKS_MS[round]);
}

// Shows an ISO 8601 time in the reader's time zone; the <time> keeps the original.
function showTime(element, iso) {
  const date = new Date(iso);
  element.dateTime = iso;
  element.textContent = Number.isNaN(date.getTime()) ? iso : DATE_TIME.format(date);
}

function showError(message, retryLabel, action) {
  endAttempt();
  retryAction = action;
  els.errorMessage.textContent = message;
  els.retry.textContent = retryLabel;
  setState('error');
}

async function logout() {
  els.logout.disabled = true;
  try {
    await api('POST', '/api/logout');
  } catch (error) {
    showError(error.message, '重试', logout);
    return;
  } finally {
    els.logout.disabled = false;
  }
  newAttempt();
}

async function start() {
  els.retry.addEventListener('click', () => retryAction());
  els.qrRefresh.addEventListener('click', () => newAttempt());
  els.logout.addEventListener('click', logout);
  els.linkOpenQr.addEventListener('click', linkOpenQr);
  els.linkScan.addEventListener('click', linkByScan);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && qrDueWhenVisible) newAttempt();
  });

  if (FOR_APP.continueTo) {
    requestQr(); // the app asked for a sign-in: a scan, whoever is signed in here
    return;
  }
  let user;
  try {
    user = await api('GET', '/api/me');
  } catch {
    // 401 is the usual answer; any other failure also means "not signed in here".
    requestQr();
    return;
  }
  showSignedIn(user);
}

start();

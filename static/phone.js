// The emulated WeChat "phone" (development only): lists the live QR codes,
// "scans" one as a new or returning follower, sends text messages as the
// emulated user, and shows the official account's replies as a chat.

import { api } from './api.js';

const POLL_INTERVAL_MS = 2000;

const byId = (id) => document.getElementById(id);
const els = {
  openid: byId('openid'),
  refresh: byId('refresh'),
  qrList: byId('qr-list'),
  qrNote: byId('qr-note'),
  qrItem: byId('qr-item'),
  chat: byId('chat'),
  form: byId('message-form'),
  input: byId('message-input'),
  mode: byId('mode'),
};

// Set when the page was opened for one QR (its url: /_emulator/q/<code>): show only that one.
const onlyTicket = document.body.dataset.ticket;

// The <li> on screen for each live ticket, so a poll updates rows in place
// instead of replacing a button under the user's finger.
const rows = new Map();

async function refreshList() {
  let data;
  try {
    data = await api('GET', '/_emulator/api/qrcodes');
  } catch (error) {
    els.qrNote.textContent = `无法获取二维码列表：${error.message}`;
    els.qrNote.hidden = false;
    return;
  }
  els.openid.textContent = data.openid;
  const shown = onlyTicket ? data.qrcodes.filter((qr) => qr.ticket === onlyTicket) : data.qrcodes;
  // The API has no creation time; with one lifetime for all, more time left means newer.
  renderList([...shown].sort((a, b) => b.expires_in - a.expires_in));
  els.qrNote.textContent = onlyTicket ? '这个二维码已失效或不存在。' : '暂无有效二维码：先在电脑上打开登录页。';
  els.qrNote.hidden = shown.length > 0;
}

function renderList(qrcodes) {
  const live = new Set(qrcodes.map((qr) => qr.ticket));
  for (const [ticket, row] of rows) {
    if (!live.has(ticket)) {
      row.remove();
      rows.delete(ticket);
    }
  }
  qrcodes.forEach((qr, index) => {
    const row = rows.get(qr.ticket) ?? addRow(qr);
    row.querySelector('.seconds-left').textContent = `剩余 ${qr.expires_in} 秒`;
    const there = els.qrList.children[index];
    if (there !== row) els.qrList.insertBefore(row, there ?? null);
  });
}

function addRow(qr) {
  const row = els.qrItem.content.firstElementChild.cloneNode(true);
  const scene = row.querySelector('.scene');
  scene.textContent = shorten(qr.scene_str);
  scene.title = qr.scene_str;
  for (const [selector, follower] of [['.scan-new', 'new'], ['.scan-returning', 'returning']]) {
    const button = row.querySelector(selector);
    button.dataset.ticket = qr.ticket;
    button.addEventListener('click', () => scan(qr.ticket, follower));
  }
  rows.set(qr.ticket, row);
  return row;
}

// Scene strings are long random tokens; the ends are enough to tell them apart.
function shorten(text) {
  return text.length > 16 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text;
}

// The message-encryption mode to send in; empty means the server's own mode.
function chosenMode() {
  return els.mode.value ? { mode: els.mode.value } : {};
}

async function scan(ticket, follower) {
  addBubble('me', follower === 'new' ? '[扫描二维码]（新关注）' : '[扫描二维码]（已关注）');
  await deliver('/_emulator/api/scan', { ticket, follower, ...chosenMode() });
}

async function sendMessage(event) {
  event.preventDefault();
  const content = els.input.value.trim();
  if (!content) return;
  els.input.value = '';
  addBubble('me', content);
  await deliver('/_emulator/api/message', { content, ...chosenMode() });
}

// Posts an event or message as the user and shows what the account answered.
async function deliver(path, body) {
  let result;
  try {
    result = await api('POST', path, body);
  } catch (error) {
    addNote(`发送失败：${error.message}`, 'error');
    return;
  }
  if (result.reply === null) {
    addNote('(公众号未回复)');
  } else {
    addBubble('reply', result.reply);
  }
  if (result.status !== 200) {
    addNote(`公众号回调返回 HTTP ${result.status}`, 'error');
  }
}

function addBubble(kind, text) {
  const bubble = document.createElement('div');
  bubble.className = `bubble ${kind}`;
  bubble.textContent = text;
  addToChat(bubble);
}

function addNote(text, kind = '') {
  const note = document.createElement('p');
  note.className = `note ${kind}`.trim();
  note.textContent = text;
  addToChat(note);
}

function addToChat(element) {
  els.chat.append(element);
  els.chat.scrollTop = els.chat.scrollHeight; // newest at the bottom, like WeChat
}

async function poll() {
  await refreshList();
  setTimeout(poll, POLL_INTERVAL_MS);
}

els.refresh.addEventListener('click', refreshList);
els.form.addEventListener('submit', sendMessage);
poll();

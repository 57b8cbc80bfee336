// onair web app: OBS browser-source overlays on a transparent page.
//   /overlay/{stream}/chat    the stream's chat (anonymous, read-only)
//   /overlay/{stream}/poll    the running poll with live bars
//   /overlay/{stream}/alerts#token=<overlay token>   tip alerts (donations plugin)
// The overlay token (read-only: it only subscribes to the streamer's alert queue) and an
// unlisted stream's share token come after '#', so they are never sent to the server with the
// page request, nor written to access logs. Reconnects with backoff and catches up: the chat
// history on join, the active poll, the alerts after the last one acknowledged.
import {api, Socket} from './api.js';
import {el, clear, money} from './ui.js';

const [, , id, kind] = location.pathname.split('/');
const params = new URLSearchParams(location.hash.replace(/^#/, ''));
const share = params.get('share');
const token = params.get('token');
const root = document.getElementById('overlay');
const withShare = (d) => (share ? {...d, share} : d);

// ---- chat -------------------------------------------------------------------------------------
function chatLine(m) {
  return el('div', {class: 'chatline', dataset: {id: m.id}}, el('span', {class: 'name'}, m.user_name), m.text);
}
function addLine(m) {
  if (root.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
  root.append(chatLine(m));
  while (root.children.length > 12) root.firstElementChild.remove();
}

// ---- poll -------------------------------------------------------------------------------------
function renderPoll(p) {
  if (!p || p.status === 'archived') return clear(root);
  const total = p.total_votes || 0;
  clear(root, el('div', {class: 'poll'}, el('div', {}, p.title),
    p.choices.map((c) => {
      const pct = Math.round(c.percent ?? (total ? 100 * (c.votes || 0) / total : 0));
      const bar = el('span');
      bar.style.width = pct + '%';
      return el('div', {}, el('div', {}, `${c.title} · ${pct} %`), el('div', {class: 'bar'}, bar));
    }),
    el('div', {class: 'state'}, p.status === 'active' ? `${p.voters ?? total} votes` : 'Poll closed')));
}

// ---- alerts -----------------------------------------------------------------------------------
const queue = [];
let showing = false;
function showAlert(a) {
  queue.push(a);
  if (!showing) next();
}
function next() {
  const a = queue.shift();
  if (!a) { showing = false; return; }
  showing = true;
  const d = a.data || {};
  const who = d.anonymous ? 'Someone' : (d.donor_name || d.user_name || d.name || 'Someone');
  const what = a.kind === 'donation' || d.amount
    ? [el('span', {class: 'amount'}, money(d.amount, d.currency)), ' from ', who]
    : [who, ' ', a.kind];
  const node = el('div', {class: 'alert', role: 'alert', dataset: {seq: a.seq}}, what,
    d.message ? el('span', {class: 'message'}, d.message) : null);
  clear(root, node);
  sock.send('donations.alerts.ack', {seq: a.seq}).catch(() => {});
  setTimeout(() => { node.remove(); next(); }, 6000);
}

const sock = new Socket({async onOpen(ws) {
  if (kind === 'chat') {
    const j = await ws.send('chat.join', withShare({stream_id: id}));
    clear(root);
    j.history.slice(-12).forEach(addLine);
  } else if (kind === 'poll') {
    await ws.send('streams.watch', withShare({stream_id: id}));
    const r = await api('GET', `/api/v1/streams/${id}/polls/active`, {query: {share}, auth: false});
    renderPoll(r.poll);
  } else if (kind === 'alerts') {
    if (!token) return clear(root, el('div', {class: 'state'}, 'This overlay link has no #token=.'));
    await ws.send('donations.alerts.subscribe', {token});
  }
}, onState: (s, e) => {
  if (s === 'error') clear(root, el('div', {class: 'state', role: 'status'}, e.message));
}});
sock.on('chat.message', addLine)
  .on('chat.deleted', ({id: mid}) => root.querySelector(`[data-id="${CSS.escape(mid)}"]`)?.remove())
  .on('poll.started', ({poll}) => renderPoll(poll))
  .on('poll.updated', ({poll}) => renderPoll(poll))
  .on('poll.ended', ({poll}) => renderPoll(poll))
  .on('alert.show', showAlert)
  .on('alert.skipped', ({seq}) => root.querySelector(`[data-seq="${seq}"]`)?.remove());

sock.connect();

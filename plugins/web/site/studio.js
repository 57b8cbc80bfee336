// onair web app: the studio /studio. Create streams, go live from the browser over WHIP
// (camera, microphone or screen, with device pickers and a preview) or from OBS (WHIP URL and
// stream key), health grade and graph, chat moderation (delete, timeout, ban, held queue,
// modes, blocked terms), Q&A moderation, polls, audience figures and tip alerts; the schedule
// editor (studio-schedule.js) and the stream's webhooks (studio-webhooks.js).
//
// Stream keys are shown once by the server (on create and rotate). The studio keeps them in
// sessionStorage (this tab only) so "Go live" can use them; without one it rotates the key.
import {api, Socket, plugins} from './api.js';
import {publish} from './rtc.js';
import {el, $, clear, say, header, clock, money} from './ui.js';
import {showWebhooks} from './studio-webhooks.js';
import {showSchedule} from './studio-schedule.js';

const KEYS = 'onair.stream_keys';
const keys = JSON.parse(sessionStorage.getItem(KEYS) || '{}');
const keep = (id, key) => { keys[id] = key; sessionStorage.setItem(KEYS, JSON.stringify(keys)); };
const st = {me: null, streams: [], current: null, publisher: null, media: null, health: [], viewers: [], poll: null};
const status = (t, k) => say($('#status'), t, k);

// ---- streams ----------------------------------------------------------------------------------
async function loadStreams() {
  const r = await api('GET', '/api/v1/streams', {query: {owner: st.me.id, limit: 50}});
  st.streams = r.streams;
  clear($('#streams'), r.streams.map((s) => el('li', {},
    el('button', {type: 'button', class: 'link', 'aria-current': st.current?.id === s.id ? 'true' : null,
                  onclick: () => select(s)}, s.title),
    el('span', {class: s.status === 'live' ? 'badge' : 'muted'}, s.status === 'live' ? 'LIVE' : s.status),
    el('span', {class: 'muted'}, s.visibility))));
  if (!r.streams.length) $('#streams').append(el('li', {class: 'muted'}, 'No streams yet: create one above.'));
}

$('#create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const r = await api('POST', '/api/v1/streams', {body: {title: $('#new-title').value, visibility: $('#new-visibility').value}});
    keep(r.stream.id, r.stream_key);
    $('#new-title').value = '';
    status(`Created “${r.stream.title}”.`, 'ok');
    await loadStreams();
    await select(r.stream);
  } catch (e) {
    status(e.message, 'error');
  }
});

async function select(s) {
  if (st.current && st.current.id !== s.id) {
    if (st.publisher) return status('End the live stream before switching.', 'error');
    await sock.send('chat.leave', {stream_id: st.current.id}).catch(() => {});
  }
  st.current = s;
  st.health = [];
  st.viewers = [];
  for (const p of ['#live-panel', '#chat-panel']) $(p).hidden = false;
  $('#stream-title').textContent = s.title;
  $('#whip-url').textContent = new URL(`/api/v1/whip/${s.id}`, location.origin).href;
  $('#stream-key').textContent = keys[s.id] || '(shown once, when created or rotated)';
  const watch = `/watch/${s.id}` + (s.visibility === 'unlisted' && s.share_token ? `#share=${s.share_token}` : '');
  $('#watch-link').href = watch;
  $('#edit-title').value = s.title;
  $('#edit-description').value = s.description || '';
  $('#edit-category').value = s.category || '';
  $('#edit-visibility').value = s.visibility;
  overlayLinks();
  await devices();
  await joinAll();
  loadStreams();
}

// RTMP ingest (plugins/rtmp): OBS's classic setup, rtmp://<host>:<port>/<app> + the stream key
async function showRtmp(on) {
  for (const id of ['#rtmp-term', '#rtmp-desc']) $(id).hidden = true;
  if (!on) return;
  const info = await api('GET', '/api/v1/rtmp').catch(() => null);
  if (!info) return;
  $('#rtmp-url').textContent = `rtmp://${location.hostname}:${info.port}/${info.app}`;
  for (const id of ['#rtmp-term', '#rtmp-desc']) $(id).hidden = false;
}

async function joinAll() {
  const s = st.current;
  if (!s || sock.ws?.readyState !== WebSocket.OPEN) return;
  st.have = await plugins(); // before the history: its lines get an Invite button
  const joined = await sock.send('chat.join', {stream_id: s.id});
  clear($('#messages'));
  joined.history.forEach(addMessage);
  await sock.send('streams.watch', {stream_id: s.id}).catch(() => {});
  // each panel is there when its plugin runs (hooks for the ones a server leaves out)
  const have = await plugins();
  st.have = have;
  $('#cohosts-panel').hidden = !have.has('cohosts');
  loadCohosts();
  $('#restream-panel').hidden = !have.has('multiplatform');
  showRtmp(have.has('rtmp'));
  loadRestream();
  $('#qa-panel').hidden = !have.has('qa');
  $('#poll-panel').hidden = !have.has('polls');
  $('#stats-panel').hidden = !have.has('analytics');
  showWebhooks(s, have.has('webhooks'));
  if (have.has('qa')) {
    await sock.send('qa.watch', {stream_id: s.id}).catch(() => {});
    api('GET', `/api/v1/streams/${s.id}/questions`, {query: {limit: 50}}).then((r) => {
      questions.clear();
      r.questions.forEach(upsertQuestion);
    }).catch((e) => status(e.message, 'error'));
  }
  if (have.has('analytics')) {
    sock.send('analytics.watch', {stream_id: s.id}).then((r) => showStats(r.metrics)).catch((e) => status(e.message, 'error'));
    loadAnalytics(true);
  }
  if (have.has('polls'))
    api('GET', `/api/v1/streams/${s.id}/polls/active`).then((r) => renderPoll(r.poll)).catch((e) => status(e.message, 'error'));
  if (have.has('moderation')) loadHeld();
  loadModes();
  $('#record').hidden = !have.has('recording');
  if (have.has('recording')) recordingState();
}

$('#edit-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const r = await api('PATCH', `/api/v1/streams/${st.current.id}`, {body: {
      title: $('#edit-title').value, description: $('#edit-description').value,
      category: $('#edit-category').value.trim() || null, visibility: $('#edit-visibility').value}});
    st.current = r.stream;
    $('#stream-title').textContent = r.stream.title;
    status('Saved.', 'ok');
    loadStreams();
  } catch (e) {
    status(e.message, 'error');
  }
});

$('#rotate').addEventListener('click', async () => {
  try {
    const r = await api('POST', `/api/v1/streams/${st.current.id}/key/rotate`);
    keep(st.current.id, r.stream_key);
    $('#stream-key').textContent = r.stream_key;
  } catch (e) {
    status(e.message, 'error');
  }
});

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button.copy');
  if (!b) return;
  const text = document.getElementById(b.dataset.copy)?.textContent || b.dataset.text || '';
  try {
    await navigator.clipboard.writeText(text);
    status('Copied.', 'ok');
  } catch {
    status('Copy refused by the browser: select the text instead.', 'error');
  }
});

// ---- going live ------------------------------------------------------------------------------
async function devices() {
  const list = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const fill = (sel, kind) => {
    const cur = sel.value;
    clear(sel, list.filter((d) => d.kind === kind).map((d, i) =>
      el('option', {value: d.deviceId}, d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`)));
    if (cur) sel.value = cur;
  };
  fill($('#camera'), 'videoinput');
  fill($('#microphone'), 'audioinput');
  if (!st.media) await preview();
}

async function preview() {
  st.media?.getTracks().forEach((t) => t.stop());
  const cam = $('#camera').value, mic = $('#microphone').value;
  try {
    if ($('#screen').checked) {
      const screen = await navigator.mediaDevices.getDisplayMedia({video: true, audio: false});
      const voice = await navigator.mediaDevices.getUserMedia({audio: mic ? {deviceId: {exact: mic}} : true});
      st.media = new MediaStream([...screen.getVideoTracks(), ...voice.getAudioTracks()]);
    } else {
      st.media = await navigator.mediaDevices.getUserMedia({
        video: {deviceId: cam ? {exact: cam} : undefined, width: {ideal: 1280}, height: {ideal: 720}},
        audio: mic ? {deviceId: {exact: mic}} : true});
    }
    $('#preview').srcObject = st.media;
    $('#preview').play().catch(() => {});
    if (!cam) devices(); // labels are known once permission was given
  } catch (e) {
    status('Camera or microphone unavailable: ' + e.message, 'error');
  }
}

for (const id of ['#camera', '#microphone', '#screen'])
  $(id).addEventListener('change', async () => {
    await preview();
    if (st.publisher) status('Devices change on the next Go live.', 'info');
  });

$('#golive').addEventListener('click', async () => {
  const s = st.current;
  if (!st.media) await preview();
  if (!st.media) return;
  $('#golive').disabled = true;
  try {
    if (!keys[s.id]) {
      const r = await api('POST', `/api/v1/streams/${s.id}/key/rotate`);
      keep(s.id, r.stream_key);
      $('#stream-key').textContent = r.stream_key;
    }
    status('Connecting…');
    st.publisher = await publish(s.id, keys[s.id], st.media, {codec: $('#h264').checked ? 'H264' : null});
    $('#stop').disabled = false;
    status('You are live.', 'ok');
    loadStreams();
  } catch (e) {
    $('#golive').disabled = false;
    status('Could not go live: ' + e.message, 'error');
  }
});

$('#stop').addEventListener('click', async () => {
  const p = st.publisher;
  st.publisher = null;
  await p?.stop();
  $('#stop').disabled = true;
  $('#golive').disabled = false;
  status('The stream ended.', 'ok');
  setTimeout(loadStreams, 500);
});

// ---- recording (recording plugin) --------------------------------------------------------------
async function recordingState() {
  try {
    const r = await api('GET', `/api/v1/streams/${st.current.id}/recordings`);
    const on = (r.recordings || []).some((x) => x.state === 'recording');
    $('#record').setAttribute('aria-pressed', on ? 'true' : 'false');
    $('#record').textContent = on ? 'Stop recording' : 'Record';
  } catch { /* not available */ }
}

$('#record').addEventListener('click', async () => {
  const on = $('#record').getAttribute('aria-pressed') === 'true';
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/recording/${on ? 'stop' : 'start'}`);
    status(on ? 'Recording stopped.' : 'Recording.', 'ok');
  } catch (e) {
    status(e.message, 'error');
  }
  recordingState();
});

// the publisher's own figures (what only the browser knows) every 5 s
setInterval(async () => {
  if (!st.publisher || !st.current) return;
  const r = await st.publisher.report().catch(() => null);
  if (r) sock.send('health.report', {stream_id: st.current.id, ...r}).catch(() => {});
}, 5000);

// ---- health ---------------------------------------------------------------------------------
function bitrate(sample) {
  if (!sample) return 0;
  if (typeof sample.bitrate_kbps === 'number') return sample.bitrate_kbps;
  return (sample.tracks || []).reduce((a, t) => a + (t.bitrate_kbps || 0) +
    (t.layers || []).reduce((b, l) => b + (l.bitrate_kbps || 0), 0), 0);
}

function graph(canvas, values, color) {
  const c = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  c.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  c.strokeStyle = color;
  c.lineWidth = 2;
  c.beginPath();
  values.forEach((v, i) => {
    const x = values.length > 1 ? (i / (values.length - 1)) * w : 0;
    const y = h - 4 - (v / max) * (h - 8);
    if (i) c.lineTo(x, y); else c.moveTo(x, y);
  });
  c.stroke();
}
const accent = () => getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#b3123a';

function onHealth(u) {
  if (!st.current || u.stream !== st.current.id) return;
  const g = $('#health');
  g.dataset.grade = u.grade;
  g.textContent = `Health: ${u.grade}` + (u.reasons?.length ? ` (${u.reasons.join(', ')})` : '');
  st.health.push(bitrate(u.publisher));
  if (st.health.length > 120) st.health.shift();
  graph($('#health-graph'), st.health, accent());
}

// ---- chat moderation ------------------------------------------------------------------------
const mod = (t, k) => say($('#mod-status'), t, k);

function addMessage(m) {
  names.set(m.user, m.user_name);
  const list = $('#messages');
  if (list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
  const mine = m.user === st.me.id;
  list.append(el('li', {dataset: {id: m.id, user: m.user}},
    el('span', {class: 'muted'}, clock(m.created_at), ' '),
    el('span', {class: 'name'}, m.user_name), el('span', {class: 'text'}, m.text),
    el('span', {class: 'tools'},
      el('button', {type: 'button', class: 'small', 'aria-label': `Delete message from ${m.user_name}`,
                    onclick: () => del(m)}, 'Delete'),
      mine ? null : el('button', {type: 'button', class: 'small', 'aria-label': `Time out ${m.user_name} for 10 minutes`,
                                  onclick: () => timeout(m)}, 'Timeout'),
      mine ? null : el('button', {type: 'button', class: 'small', 'aria-label': `Ban ${m.user_name}`,
                                  onclick: () => ban(m)}, 'Ban'),
      mine || !st.have?.has('cohosts') ? null : el('button', {type: 'button', class: 'small',
        'aria-label': `Invite ${m.user_name} to co-host`, onclick: () => inviteCohost(m)}, 'Invite'))));
  list.scrollTop = list.scrollHeight;
}

async function del(m) {
  try {
    await api('DELETE', `/api/v1/streams/${st.current.id}/chat/messages/${m.id}`);
    mod('Message deleted.', 'ok');
  } catch (e) { mod(e.message, 'error'); }
}

async function timeout(m) {
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/moderation/timeouts`, {body: {user: m.user, duration_s: 600}});
    mod(`${m.user_name} is timed out for 10 minutes.`, 'ok');
  } catch (e) { mod(e.message, 'error'); }
}

async function ban(m) {
  if (!confirm(`Ban ${m.user_name} from this stream?`)) return;
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/moderation/bans`, {body: {user: m.user}});
    mod(`${m.user_name} is banned.`, 'ok');
  } catch (e) { mod(e.message, 'error'); }
}

async function loadHeld() {
  try {
    const r = await api('GET', `/api/v1/streams/${st.current.id}/moderation/held`);
    clear($('#held'), (r.messages || []).map((m) => el('li', {},
      el('span', {class: 'name'}, m.user_name), m.text, el('span', {class: 'muted'}, m.held_reason || ''),
      el('button', {type: 'button', class: 'small', onclick: () => held(m, 'approve')}, 'Approve'),
      el('button', {type: 'button', class: 'small', onclick: () => held(m, 'deny')}, 'Deny'))));
    if (!r.messages?.length) $('#held').append(el('li', {class: 'muted'}, 'Nothing held.'));
  } catch { /* no moderation plugin */ }
}

async function held(m, what) {
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/moderation/held/${m.id || m._id}/${what}`);
    loadHeld();
  } catch (e) { mod(e.message, 'error'); }
}

async function modes() {
  try {
    await api('PUT', `/api/v1/streams/${st.current.id}/chat/modes`, {body: {
      slow_s: Number($('#slow').value), verified_only: $('#verified-only').checked,
      followers_only_min: $('#followers-only').value === '' ? null : Number($('#followers-only').value)}});
    mod('Chat modes saved.', 'ok');
  } catch (e) { mod(e.message, 'error'); }
}
$('#slow').addEventListener('change', modes);
$('#verified-only').addEventListener('change', modes);
$('#followers-only').addEventListener('change', modes);

// the modes as stored (GET .../chat/modes), shown when a stream is selected
async function loadModes() {
  try {
    const m = await api('GET', `/api/v1/streams/${st.current.id}/chat/modes`);
    const v = m.modes || m;
    $('#slow').value = String(v.slow_s ?? 0);
    if (!$('#slow').value) $('#slow').append(el('option', {value: v.slow_s, selected: true}, `${v.slow_s} s`));
    $('#verified-only').checked = !!v.verified_only;
    $('#followers-only').value = v.followers_only_min === null || v.followers_only_min === undefined ? '' : String(v.followers_only_min);
  } catch { /* defaults shown */ }
}

$('#term-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/moderation/terms`, {body: {pattern: $('#term').value, action: 'deny'}});
    mod(`“${$('#term').value}” is blocked.`, 'ok');
    $('#term').value = '';
  } catch (e) { mod(e.message, 'error'); }
});

// ---- co-hosts (cohosts plugin) ------------------------------------------------------------------
const names = new Map(); // user id -> name, from chat

async function inviteCohost(m) {
  try {
    await api('POST', `/api/v1/streams/${st.current.id}/cohosts/invite`, {body: {user_id: m.user}});
    mod(`${m.user_name} is invited to co-host.`, 'ok');
  } catch (e) { mod(e.message, 'error'); }
}

async function loadCohosts() {
  if (!st.have?.has('cohosts') || !st.current) return;
  try {
    const r = await api('GET', `/api/v1/streams/${st.current.id}/cohosts`);
    clear($('#cohosts'), r.cohosts.map((c) => el('li', {},
      el('span', {class: 'grow'}, names.get(c.user_id) || c.user_id, ' ',
        el('span', {class: c.on_air ? 'badge' : 'muted'}, c.on_air ? 'on air' : 'off air')),
      el('button', {type: 'button', class: 'small', 'aria-label': `Remove co-host ${names.get(c.user_id) || c.user_id}`,
        onclick: () => api('DELETE', `/api/v1/streams/${st.current.id}/cohosts/${c.user_id}`)
          .then(loadCohosts).catch((e) => mod(e.message, 'error'))}, 'Remove'))));
    if (!r.cohosts.length) $('#cohosts').append(el('li', {class: 'muted'}, `No co-hosts (up to ${r.max_cohosts}).`));
  } catch { /* not available */ }
}

// ---- restreaming (multiplatform plugin) ---------------------------------------------------------
let restream = {destinations: []};
async function loadRestream() {
  if (!st.have?.has('multiplatform') || !st.current) return;
  try {
    const [c, m] = await Promise.all([api('GET', '/api/v1/multiplatform/connections'),
                                      api('GET', `/api/v1/streams/${st.current.id}/multiplatform`)]);
    restream = m.multiplatform || {destinations: []};
    $('#restream-auto').checked = restream.start_with_stream !== false;
    renderDestinations(c.connections || [], restream.destinations || []);
  } catch (e) { status(e.message, 'error'); }
}

function renderDestinations(connections, statuses) {
  const byConn = new Map(statuses.map((d) => [d.connection || d.id, d]));
  clear($('#destinations'), connections.map((c) => {
    const d = byConn.get(c.id);
    return el('li', {dataset: {id: c.id}},
      el('label', {class: 'grow'}, el('input', {type: 'checkbox', checked: !!d, dataset: {conn: c.id}}),
        `${c.name} `, el('span', {class: 'muted'}, c.url, c.stream_key_hint ? ` · key ${c.stream_key_hint}` : '')),
      d ? el('span', {class: d.state === 'live' ? 'badge' : 'muted', role: 'status'},
        d.state, d.reason ? ` (${d.reason})` : '', d.bitrate_kbps ? ` ${d.bitrate_kbps} kbit/s` : '') : null,
      el('button', {type: 'button', class: 'small', 'aria-label': `Delete ${c.name}`, onclick: () =>
        api('DELETE', `/api/v1/multiplatform/connections/${c.id}`).then(loadRestream).catch((e) => status(e.message, 'error'))}, 'Delete'));
  }));
  if (!connections.length) $('#destinations').append(el('li', {class: 'muted'}, 'No platforms yet: add one below.'));
}

$('#restream-save').addEventListener('click', async () => {
  const ids = [...document.querySelectorAll('#destinations input[data-conn]:checked')].map((i) => i.dataset.conn);
  try {
    await api('PUT', `/api/v1/streams/${st.current.id}/multiplatform`, {body: {destinations: ids, start_with_stream: $('#restream-auto').checked}});
    status('Destinations saved.', 'ok');
    loadRestream();
  } catch (e) { status(e.message, 'error'); }
});

$('#connection-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    await api('POST', '/api/v1/multiplatform/connections', {body: {name: $('#conn-name').value, url: $('#conn-url').value, stream_key: $('#conn-key').value}});
    for (const i of ['#conn-name', '#conn-url', '#conn-key']) $(i).value = '';
    status('Platform added.', 'ok');
    loadRestream();
  } catch (e) { status(e.message, 'error'); }
});

// ---- Q&A moderation ---------------------------------------------------------------------------
const questions = new Map();
function upsertQuestion(q) {
  questions.set(q.id, {...questions.get(q.id), ...q});
  const list = [...questions.values()].filter((x) => x.status !== 'dismissed')
    .sort((a, b) => (b.pinned - a.pinned) || (b.votes - a.votes));
  const act = (q, what, label) => el('button', {type: 'button', class: 'small', 'aria-label': `${label}: ${q.text}`,
    onclick: () => api('POST', `/api/v1/streams/${st.current.id}/questions/${q.id}/${what}`).catch((e) => mod(e.message, 'error'))}, label);
  clear($('#questions'), list.map((x) => el('li', {class: x.pinned ? 'pinned' : null},
    el('span', {class: 'votes'}, `▲ ${x.votes}`),
    el('span', {class: 'q'}, x.text, el('span', {class: 'muted'}, ' — ', x.author_name), x.status === 'answered' ? el('span', {class: 'answer'}, 'Answered') : null),
    x.status === 'open' ? act(x, 'answer', 'Answered') : null,
    act(x, x.pinned ? 'unpin' : 'pin', x.pinned ? 'Unpin' : 'Pin'),
    act(x, 'dismiss', 'Dismiss'))));
}

// ---- polls ----------------------------------------------------------------------------------
function renderPoll(p) {
  st.poll = p;
  const box = $('#poll-live');
  if (!p) return clear(box, el('p', {class: 'muted'}, 'No poll running.'));
  clear(box, el('h3', {}, p.title, ' ', el('span', {class: 'muted'}, p.status)),
    el('ul', {class: 'list'}, p.choices.map((c) => el('li', {}, c.title, el('span', {class: 'muted'}, ` ${c.votes ?? 0} votes (${Math.round(c.percent ?? 0)} %)`)))),
    p.status === 'active' ? el('button', {type: 'button', onclick: () =>
      api('POST', `/api/v1/polls/${p.id}/end`).catch((e) => status(e.message, 'error'))}, 'End poll') : null);
}

$('#poll-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const r = await api('POST', `/api/v1/streams/${st.current.id}/polls`, {body: {
      title: $('#poll-title').value,
      choices: $('#poll-choices').value.split('\n').map((x) => x.trim()).filter(Boolean),
      duration_s: Number($('#poll-duration').value)}});
    renderPoll(r.poll || r);
    status('Poll started.', 'ok');
  } catch (e) { status(e.message, 'error'); }
});

// ---- audience --------------------------------------------------------------------------------
function showStats(m) {
  if (!m) return;
  clear($('#stats'),
    el('dt', {}, 'Watching'), el('dd', {}, String(m.viewers ?? 0)),
    el('dt', {}, 'Peak'), el('dd', {}, String(m.peak_viewers ?? 0)),
    el('dt', {}, 'Unique viewers'), el('dd', {}, String(m.unique_viewers ?? 0)));
  st.viewers.push(m.viewers ?? 0);
  if (st.viewers.length > 300) st.viewers.shift();
  graph($('#viewers-graph'), st.viewers, accent());
  loadAnalytics();
}

// the stream's series and totals (GET .../analytics), at most every 20 s
let analyticsAt = 0;
async function loadAnalytics(force = false) {
  if (!st.current || (!force && Date.now() - analyticsAt < 20_000)) return;
  analyticsAt = Date.now();
  try {
    const a = await api('GET', `/api/v1/streams/${st.current.id}/analytics`);
    graph($('#engagement-graph'), a.series.map((b) => (b.chat || 0) + (b.reactions || 0) + (b.questions || 0) + (b.poll_votes || 0)), accent());
    const t = a.summary || a.totals || {};
    clear($('#totals'),
      el('dt', {}, 'Average watch'), el('dd', {}, `${Math.round((t.average_watch_ms || 0) / 1000)} s`),
      el('dt', {}, 'Chat messages'), el('dd', {}, String(t.chat_messages ?? 0)),
      el('dt', {}, 'Reactions'), el('dd', {}, String(t.reactions ?? 0)),
      el('dt', {}, 'Questions'), el('dd', {}, String(t.questions ?? 0)),
      el('dt', {}, 'Poll votes'), el('dd', {}, String(t.poll_votes ?? 0)),
      el('dt', {}, 'New followers'), el('dd', {}, String(t.follows ?? 0)));
    if (!st.viewers.length) graph($('#viewers-graph'), a.series.map((b) => b.viewers || 0), accent());
  } catch { /* not available */ }
}

// ---- tips and overlays (donations plugin) ------------------------------------------------------
async function overlayLinks() {
  const box = $('#overlays');
  const s = st.current;
  const link = (kind, hash = '') => {
    const url = new URL(`/overlay/${s.id}/${kind}${hash}`, location.origin).href;
    return el('div', {class: 'row'}, el('code', {}, url),
      el('button', {type: 'button', class: 'copy small', dataset: {text: url}}, 'Copy'));
  };
  const share = s.visibility === 'unlisted' && s.share_token ? `#share=${s.share_token}` : '';
  clear(box, link('chat', share), link('poll', share));
  if (!(await plugins()).has('donations')) return; // hook: alerts when the plugin runs
  box.append(el('button', {type: 'button', class: 'small', onclick: async () => {
    const r = await api('POST', '/api/v1/donations/overlay-token');
    box.append(link('alerts', `#token=${r.settings?.overlay_token ?? r.overlay_token}`));
  }}, 'Make an alerts overlay link (replaces the old one)'));
  $('#alerts-panel').hidden = false;
  loadAlerts();
}

// the alert queue: newest last; replay one on the overlays, skip one, pause them all
async function loadAlerts() {
  try {
    const [r, set] = await Promise.all([api('GET', '/api/v1/donations/alerts', {query: {limit: 100}}),
                                        api('GET', '/api/v1/donations/settings')]);
    const paused = !!set.settings?.alerts_paused;
    $('#alerts-pause').setAttribute('aria-pressed', paused ? 'true' : 'false');
    $('#alerts-pause').textContent = paused ? 'Resume alerts' : 'Pause alerts';
    const act = (a, what, label) => el('button', {type: 'button', class: 'small', 'aria-label': `${label} alert ${a.seq}`,
      onclick: () => api('POST', `/api/v1/donations/alerts/${a.seq}/${what}`).then(loadAlerts).catch((e) => status(e.message, 'error'))}, label);
    clear($('#alerts'), (r.alerts || []).slice(-20).map((a) => el('li', {},
      el('span', {}, a.kind, ' '), a.data?.amount ? money(a.data.amount, a.data.currency) : '',
      el('span', {class: 'muted grow'}, ' ', a.data?.donor_name || a.data?.name || '', ' ', a.data?.message || ''),
      act(a, 'replay', 'Replay'), act(a, 'skip', 'Skip'))));
    if (!r.alerts?.length) $('#alerts').append(el('li', {class: 'muted'}, 'No alerts yet.'));
  } catch { /* not available */ }
}

$('#alerts-pause').addEventListener('click', async () => {
  const paused = $('#alerts-pause').getAttribute('aria-pressed') === 'true';
  try {
    await api('POST', `/api/v1/donations/alerts/${paused ? 'resume' : 'pause'}`);
  } catch (e) { status(e.message, 'error'); }
  loadAlerts();
});

// ---- socket ---------------------------------------------------------------------------------
const sock = new Socket({onOpen: () => joinAll()});
sock.on('health.update', onHealth)
  .on('chat.message', addMessage)
  .on('chat.deleted', ({id}) => $('#messages').querySelector(`[data-id="${CSS.escape(id)}"]`)?.remove())
  .on('qa.asked', ({question}) => upsertQuestion(question))
  .on('qa.answered', ({question}) => upsertQuestion(question))
  .on('qa.pinned', ({question}) => upsertQuestion(question))
  .on('qa.unpinned', ({question}) => upsertQuestion(question))
  .on('qa.dismissed', ({question}) => upsertQuestion(question))
  .on('qa.voted', ({question, votes}) => questions.has(question) && upsertQuestion({...questions.get(question), votes}))
  .on('poll.started', ({poll}) => renderPoll(poll))
  .on('poll.updated', ({poll}) => renderPoll(poll))
  .on('poll.ended', ({poll}) => renderPoll(poll))
  .on('metrics.viewers', showStats)
  // the alert is queued just after donation.received goes out: read the queue a moment later
  .on('donation.received', () => { setTimeout(loadAlerts, 800); setTimeout(loadAlerts, 3000); })
  .on('multiplatform.status', (m) => {
    if (m.stream !== st.current?.id) return;
    api('GET', '/api/v1/multiplatform/connections').then((c) => renderDestinations(c.connections || [], m.destinations || [])).catch(() => {});
  })
  .on('cohost.accepted', () => loadCohosts())
  .on('cohost.joined', () => loadCohosts())
  .on('cohost.off_air', () => loadCohosts())
  .on('cohost.left', () => loadCohosts())
  .on('cohost.removed', () => loadCohosts())
  .on('stream.started', () => loadStreams())
  .on('stream.ended', () => loadStreams());

async function main() {
  st.me = await header();
  if (!st.me) return void (location.href = '/signin?next=/studio');
  if (!st.me.roles.includes('streamer')) return status('Your account has no streamer role.', 'error');
  await loadStreams();
  showSchedule((await plugins()).has('scheduling'));
  sock.connect();
  const first = st.streams.find((s) => s.status === 'live') || st.streams[0];
  if (first) await select(first);
}

main();

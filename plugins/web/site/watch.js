// onair web app: the viewer page /watch/{stream}. WHEP player, chat, reactions, Q&A, polls,
// tips, follow, viewer count, all on the public REST / WebSocket / WHEP APIs.
// An unlisted stream's share token comes after '#' (#share=sh_...): never sent in a page
// request, so it stays out of server logs and Referer headers.
import {api, accessToken, session, Socket, ApiError, plugins} from './api.js';
import {Player, publish} from './rtc.js';
import {el, $, clear, say, header, hashParams, clock, money, REACTIONS} from './ui.js';

const id = decodeURIComponent(location.pathname.split('/')[2] || '');
const share = hashParams().get('share');
const withShare = (d) => (share ? {...d, share} : d);
const state = {stream: null, user: null, poll: null, myVotes: new Set(), questions: new Map()};

const video = $('#video');
const player = new Player(video, id, {share, onState: (s, e) => {
  const words = {connecting: 'Connecting…', connected: 'Playing', offline: 'Offline',
                 failed: 'Connection lost: reconnecting…', error: 'Cannot play: ' + (e?.message || ''),
                 disconnected: 'Connection interrupted…', closed: ''};
  say($('#player-state'), words[s] ?? s, s === 'error' || s === 'failed' ? 'error' : 'info');
}});

function showLive(live, {ended = false} = {}) {
  $('#live-badge').hidden = !live;
  plugins().then((have) => { $('#clip').hidden = !(live && state.user && have.has('clips')); });
  $('#offline').hidden = live;
  if (live) player.start();
  else player.stop({ended});
}

function renderStream(s) {
  state.stream = s;
  document.title = `${s.title} · onair`;
  $('#title').textContent = s.title;
  $('#description').textContent = s.description || '';
  setViewers(s.viewer_count ?? 0);
}

function setViewers(n) {
  $('#viewers').textContent = `${n} watching`;
}

// ---- chat -----------------------------------------------------------------------------------
function chatLine(m) {
  return el('li', {dataset: {id: m.id, user: m.user}},
    el('span', {class: 'muted'}, clock(m.created_at), ' '),
    el('span', {class: 'name'}, m.user_name || 'someone'),
    el('span', {class: 'text'}, m.text));
}

function addMessage(m) {
  const list = $('#messages');
  if (list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
  list.append(chatLine(m));
  while (list.children.length > 200) list.firstElementChild.remove();
  if (stick) list.scrollTop = list.scrollHeight;
}

// ---- reactions ------------------------------------------------------------------------------
function renderReactions(totals = {}) {
  const box = $('#reactions');
  if (!box.children.length)
    for (const [name, emoji] of Object.entries(REACTIONS))
      box.append(el('button', {type: 'button', dataset: {reaction: name}, 'aria-label': `React ${name}`,
                               onclick: () => react(name)},
        emoji, el('span', {class: 'count', 'aria-hidden': 'true'}, '')));
  for (const [name, n] of Object.entries(totals)) {
    const c = box.querySelector(`[data-reaction="${CSS.escape(name)}"] .count`);
    if (c) c.textContent = n ? String(n) : '';
  }
}

async function react(name) {
  if (!session.get()) return say($('#chat-status'), 'Sign in to react.', 'error');
  try {
    await sock.send('reactions.send', withShare({stream_id: id, reaction: name}));
  } catch (e) {
    say($('#chat-status'), e.message, 'error');
  }
}

// ---- questions ------------------------------------------------------------------------------
function renderQuestions() {
  const list = $('#questions');
  const qs = [...state.questions.values()].filter((q) => q.status !== 'dismissed')
    .sort((a, b) => (b.pinned - a.pinned) || (b.votes - a.votes) || (a.created_at - b.created_at));
  clear(list, qs.map((q) => el('li', {class: q.pinned ? 'pinned' : null, dataset: {id: q.id}},
    el('button', {type: 'button', class: 'small', 'aria-pressed': q.voted ? 'true' : 'false',
                  'aria-label': `Upvote: ${q.text}`, disabled: q.status !== 'open',
                  onclick: () => vote(q)}, '▲ ', el('span', {class: 'votes'}, String(q.votes))),
    el('span', {class: 'q'}, q.pinned ? '📌 ' : '', q.text,
       el('span', {class: 'muted'}, ' — ', q.author_name || ''),
       q.answer_text ? el('span', {class: 'answer'}, 'Answer: ', q.answer_text)
                     : q.status === 'answered' ? el('span', {class: 'answer'}, 'Answered') : null))));
}

function upsertQuestion(q) {
  const old = state.questions.get(q.id);
  state.questions.set(q.id, {...old, ...q, voted: q.voted ?? old?.voted ?? false});
  renderQuestions();
}

async function vote(q) {
  if (!session.get()) return say($('#qa-status'), 'Sign in to vote.', 'error');
  try {
    const r = await sock.send('qa.vote', withShare({stream_id: id, question_id: q.id, on: !q.voted}));
    upsertQuestion({...r.question, voted: !q.voted});
  } catch (e) {
    say($('#qa-status'), e.message, 'error');
  }
}

// ---- polls ----------------------------------------------------------------------------------
function renderPoll(p) {
  state.poll = p;
  const box = $('#poll');
  if (!p) { box.hidden = true; return; }
  box.hidden = false;
  const open = p.status === 'active';
  const total = p.total_votes || 0;
  clear(box, el('h2', {}, open ? 'Poll: ' : 'Poll results: ', p.title),
    el('div', {role: 'group', 'aria-label': p.title}, p.choices.map((c) => {
      const pct = c.percent ?? (total ? Math.round(100 * (c.votes || 0) / total) : 0);
      return el('div', {class: 'poll-choice', dataset: {choice: c.id}},
        open ? el('button', {type: 'button', class: 'small', 'aria-pressed': state.myVotes.has(c.id) ? 'true' : 'false',
                             onclick: () => pollVote(p, c.id)}, c.title)
             : el('span', {}, c.title),
        el('span', {class: 'muted pct'}, `${Math.round(pct)} % (${c.votes ?? 0})`),
        el('div', {class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100,
                   'aria-valuenow': Math.round(pct), 'aria-label': c.title},
          el('span', {class: 'w' + Math.round(pct)})));
    })),
    el('p', {class: 'muted', role: 'status'}, `${p.voters ?? total} voted`, open ? '' : ' · closed'));
  sizeBars(box);
}

// widths set from script (no inline style attributes under the CSP)
function sizeBars(root) {
  for (const s of root.querySelectorAll('.meter span, .bar span')) {
    const w = (s.className.match(/w(\d+)/) || [])[1];
    s.style.width = (w || 0) + '%';
  }
}

async function pollVote(p, choice) {
  if (!session.get()) return say($('#chat-status'), 'Sign in to vote.', 'error');
  try {
    await sock.send('polls.vote', withShare({poll_id: p.id, choices: [choice]}));
    state.myVotes = new Set([choice]);
    renderPoll(state.poll);
  } catch (e) {
    say($('#chat-status'), e.message, 'error');
  }
}

// ---- co-hosts (cohosts plugin): one more WHEP player per co-host on air -------------------------
const cohosts = new Map(); // user id -> {player, fig}

function cohostOn(user, name = 'Co-host') {
  if (cohosts.has(user)) return;
  const video = el('video', {playsinline: true, autoplay: true, muted: true, controls: true, 'aria-label': `${name}'s video`});
  const fig = el('figure', {dataset: {user}}, video, el('figcaption', {}, name));
  $('#cohosts').append(fig);
  const player = new Player(video, id, {share, participant: user});
  cohosts.set(user, {player, fig});
  player.start();
}

function cohostOff(user) {
  const c = cohosts.get(user);
  if (!c) return;
  cohosts.delete(user);
  c.player.stop({ended: true});
  c.fig.remove();
}

async function loadCohosts() {
  if (!(await plugins()).has('cohosts')) return;
  try {
    const r = await api('GET', `/api/v1/streams/${id}/cohosts`, {query: {share}});
    const on = new Set(r.cohosts.filter((c) => c.on_air && c.user_id !== state.user?.id).map((c) => c.user_id));
    for (const u of [...cohosts.keys()]) if (!on.has(u)) cohostOff(u);
    for (const u of on) cohostOn(u);
  } catch { /* not available */ }
}

// an invite to co-host this stream: accept, then publish camera and microphone with WHIP
let invite = null, cohostPub = null;
async function loadInvites() {
  if (!state.user || !(await plugins()).has('cohosts')) return;
  try {
    const r = await api('GET', '/api/v1/cohosts/invites');
    invite = (r.invites || []).find((i) => i.stream === id && i.status === 'pending') || null;
    $('#invite-panel').hidden = !invite && !cohostPub;
  } catch { /* not available */ }
}

$('#invite-accept').addEventListener('click', async () => {
  const st = $('#invite-status');
  try {
    await api('POST', `/api/v1/cohosts/invites/${invite.id}/accept`);
    const media = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 360}}, audio: true});
    $('#cohost-preview').srcObject = media;
    $('#cohost-preview').hidden = false;
    cohostPub = await publish(id, await accessToken(), media, {simulcast: false, role: 'cohost'});
    cohostPub.media = media;
    $('#invite-accept').hidden = true;
    $('#invite-decline').hidden = true;
    $('#cohost-leave').hidden = false;
    say(st, 'You are live as a co-host.', 'ok');
  } catch (e) {
    say(st, e.message, 'error');
  }
});

$('#invite-decline').addEventListener('click', async () => {
  try {
    await api('POST', `/api/v1/cohosts/invites/${invite.id}/decline`);
    $('#invite-panel').hidden = true;
  } catch (e) { say($('#invite-status'), e.message, 'error'); }
});

async function endCohosting(leave) {
  const p = cohostPub;
  cohostPub = null;
  if (p) {
    await p.stop({ended: !leave}).catch(() => {});
    p.media.getTracks().forEach((t) => t.stop());
  }
  if (leave) await api('DELETE', `/api/v1/streams/${id}/cohosts/${state.user.id}`).catch(() => {});
  $('#cohost-preview').hidden = true;
  $('#invite-panel').hidden = true;
}
$('#cohost-leave').addEventListener('click', () => endCohosting(true));

// ---- the socket -----------------------------------------------------------------------------
const sock = new Socket({
  onState: (s) => { if (s === 'reconnecting') say($('#chat-status'), 'Reconnecting…'); },
  async onOpen(ws) {
    say($('#chat-status'), '');
    try {
      const w = await ws.send('streams.watch', withShare({stream_id: id}));
      renderStream(w.stream);
      setViewers(w.viewer_count);
      showLive(w.stream.status === 'live');
    } catch (e) {
      return say($('#player-state'), e.message, 'error');
    }
    const joined = await ws.send('chat.join', withShare({stream_id: id}));
    clear($('#messages'));
    for (const m of joined.history) addMessage(m);
    const have = await plugins();
    loadCohosts();
    loadInvites();
    $('#qa-panel').hidden = !have.has('qa');
    $('#reactions').hidden = !have.has('reactions');
    // catch up on what changed while disconnected
    if (have.has('qa')) {
      await ws.send('qa.watch', withShare({stream_id: id})).catch(() => {});
      api('GET', `/api/v1/streams/${id}/questions`, {query: {share, limit: 50}}).then((r) => {
        state.questions.clear();
        for (const q of r.questions) upsertQuestion(q);
      }).catch((e) => say($('#qa-status'), e.message, 'error'));
    }
    if (have.has('polls'))
      api('GET', `/api/v1/streams/${id}/polls/active`, {query: {share}})
        .then((r) => renderPoll(r.poll)).catch((e) => say($('#chat-status'), e.message, 'error'));
    if (have.has('reactions'))
      api('GET', `/api/v1/streams/${id}/reactions`, {query: {share}})
        .then((r) => renderReactions(r.counts || {})).catch(() => {});
  },
});

sock.on('stream.started', ({stream}) => { renderStream(stream); showLive(true); })
  .on('stream.ended', ({stream}) => {
    renderStream(stream);
    showLive(false, {ended: true});
    for (const u of [...cohosts.keys()]) cohostOff(u);
    if (cohostPub) endCohosting(false);
    setTimeout(setupVod, 3000); // the recording is finalized shortly after
  })
  .on('stream.updated', ({stream}) => renderStream(stream))
  .on('viewer.count', ({count}) => setViewers(count))
  .on('chat.message', addMessage)
  .on('chat.deleted', ({id: mid}) => $('#messages').querySelector(`[data-id="${CSS.escape(mid)}"]`)?.remove())
  .on('chat.modes', (m) => say($('#chat-status'), [m.slow_s ? `Slow mode: ${m.slow_s} s` : '',
    m.verified_only ? 'verified accounts only' : '', m.followers_only_min !== null ? 'followers only' : '']
    .filter(Boolean).join(' · ')))
  .on('reactions.counts', ({total}) => renderReactions(total))
  .on('qa.asked', ({question}) => upsertQuestion(question))
  .on('qa.answered', ({question}) => upsertQuestion(question))
  .on('qa.pinned', ({question}) => upsertQuestion(question))
  .on('qa.unpinned', ({question}) => upsertQuestion(question))
  .on('qa.dismissed', ({question}) => upsertQuestion(question))
  .on('qa.voted', ({question, votes}) => {
    const q = state.questions.get(question);
    if (q) upsertQuestion({...q, votes});
  })
  .on('poll.started', ({poll}) => { state.myVotes = new Set(); renderPoll(poll); })
  .on('poll.updated', ({poll}) => renderPoll(poll))
  .on('poll.ended', ({poll}) => renderPoll(poll))
  .on('streams.access_revoked', ({detail}) => { showLive(false); say($('#player-state'), detail, 'error'); })
  .on('moderation.banned', () => say($('#chat-status'), 'You are banned from this stream.', 'error'))
  .on('cohost.joined', ({user_id}) => user_id !== state.user?.id && cohostOn(user_id))
  .on('cohost.off_air', ({user_id}) => cohostOff(user_id))
  .on('cohost.left', ({user_id}) => cohostOff(user_id))
  .on('cohost.removed', ({user_id}) => {
    cohostOff(user_id);
    if (user_id === state.user?.id && cohostPub) {
      endCohosting(false);
      say($('#chat-status'), 'You were removed as a co-host.', 'error');
    }
  })
  .on('cohost.invited', ({stream}) => stream === id && loadInvites())
  .on('cohost.revoked', () => loadInvites())
  .on('cohost.expired', () => loadInvites());

// ---- forms ----------------------------------------------------------------------------------
$('#chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#chat-text');
  if (!session.get()) return say($('#chat-status'), 'Sign in to chat.', 'error');
  if (!input.value.trim()) return;
  try {
    const r = await sock.send('chat.send', withShare({stream_id: id, text: input.value}));
    input.value = '';
    if (r.held) say($('#chat-status'), 'Your message is held for review.');
    else { say($('#chat-status'), ''); addMessage(r.message); }
  } catch (e) {
    // timeouts, bans, slow mode: the server says why ("you are timed out for 59 more seconds")
    say($('#chat-status'), e.message, 'error');
  }
});

$('#qa-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#qa-text');
  if (!session.get()) return say($('#qa-status'), 'Sign in to ask.', 'error');
  if (!input.value.trim()) return;
  try {
    const r = await sock.send('qa.ask', withShare({stream_id: id, text: input.value}));
    input.value = '';
    upsertQuestion(r.question);
    say($('#qa-status'), 'Asked.', 'ok');
  } catch (e) {
    say($('#qa-status'), e.message, 'error');
  }
});

$('#quality').addEventListener('change', (ev) => {
  const v = ev.target.value;
  player.setMaxLayer(v === '' ? null : Number(v)).catch((e) => say($('#player-state'), e.message, 'error'));
});

$('#follow').addEventListener('click', async (ev) => {
  const b = ev.currentTarget;
  const following = b.getAttribute('aria-pressed') === 'true';
  try {
    await api(following ? 'DELETE' : 'POST', `/api/v1/users/${state.stream.owner}/follow`);
    b.setAttribute('aria-pressed', following ? 'false' : 'true');
    b.textContent = following ? 'Follow' : 'Following';
  } catch (e) {
    say($('#player-state'), e.message, 'error');
  }
});

// Tips: shown when the donations plugin answers for this stream (test provider in development).
async function setupTips() {
  if (!(await plugins()).has('donations')) return; // hook: shown when the plugin runs
  $('#tip-panel').hidden = false;
  $('#tip').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!session.get()) return say($('#tip-status'), 'Sign in to tip.', 'error');
    const currency = $('#tip-currency').value;
    const amount = Math.round(Number($('#tip-amount').value) * 100); // minor units (USD/EUR/GBP: 2 digits)
    const message = $('#tip-message').value.trim() || null;
    try {
      const r = await api('POST', `/api/v1/streams/${id}/donations`, {
        body: {amount, currency, message}, headers: {'Idempotency-Key': crypto.randomUUID()}});
      say($('#tip-status'), `Thank you! ${money(amount, currency)} sent (${r.donation?.status || 'ok'}).`, 'ok');
      $('#tip-message').value = '';
    } catch (e) {
      say($('#tip-status'), e.message, 'error');
    }
  });
}

// ---- recordings (recording plugin) and clips (clips plugin) ---------------------------------------
// A private stream's files need a signed URL (GET .../url: a short-lived link the plugin
// signs, since a <video> cannot send the bearer token); others play from file_url.
async function playable(kind, item) {
  if (state.stream?.visibility === 'public' || !item.id) return item.file_url;
  if (kind === 'clips') { // no signed links for clips: fetch with the token, play from memory
    const headers = {Authorization: 'Bearer ' + await accessToken()};
    const r = await fetch(new URL(item.file_url, location.origin), {headers, credentials: 'omit'});
    if (!r.ok) throw new ApiError(r.status, null);
    return URL.createObjectURL(await r.blob());
  }
  const r = await api('GET', `/api/v1/${kind}/${item.id}/url`, {query: {share}});
  return r.url;
}

$('#clip').addEventListener('click', async () => {
  const b = $('#clip');
  b.disabled = true;
  try {
    await api('POST', `/api/v1/streams/${id}/clips`, {query: {share}, body: {duration_s: 30}});
    say($('#player-state'), 'Clip made: it is in “Recordings and clips”.', 'ok');
    setupVod();
  } catch (e) {
    say($('#player-state'), e.message, 'error');
  } finally {
    b.disabled = false;
  }
});

// ---- the streamer's schedule (scheduling plugin) and follow state ------------------------------
async function setupSchedule(owner) {
  if (!(await plugins()).has('scheduling')) return;
  try {
    const r = await api('GET', '/api/v1/schedules', {query: {owner, limit: 5}});
    const next = (r.items || []).filter((x) => x.next_occurrence && !x.cancelled);
    $('#sched-panel').hidden = !next.length;
    clear($('#schedule'), next.map((x) => el('li', {}, el('strong', {}, x.title),
      el('span', {class: 'muted'}, new Date(x.next_occurrence).toLocaleString(), ` · ${x.duration_min} min`,
        x.recurrence ? ' · weekly' : ''))));
  } catch { /* not available */ }
}

async function followState(owner) {
  const b = $('#follow');
  b.hidden = false;
  try { // one page of whom I follow is enough for a button
    const r = await api('GET', `/api/v1/users/${state.user.id}/following`, {query: {limit: 100}});
    const on = (r.following || r.items || []).some((f) => f.user === owner);
    b.setAttribute('aria-pressed', on ? 'true' : 'false');
    b.textContent = on ? 'Following' : 'Follow';
  } catch { b.setAttribute('aria-pressed', 'false'); }
}

async function setupVod() {
  const have = await plugins();
  const lists = [];
  if (have.has('recording'))
    lists.push(api('GET', `/api/v1/streams/${id}/recordings`, {query: {share}})
      .then((r) => (r.recordings || []).filter((x) => x.state === 'ready').map((x) => ({kind: 'recordings', x}))));
  if (have.has('clips')) // hook: the clips plugin's list, same shape (file_url, thumbnail_url)
    lists.push(api('GET', `/api/v1/streams/${id}/clips`, {query: {share}})
      .then((r) => (r.clips || []).filter((x) => !x.state || x.state === 'ready').map((x) => ({kind: 'clips', x}))));
  if (!lists.length) return;
  const items = (await Promise.all(lists.map((p) => p.catch(() => [])))).flat();
  $('#vod-panel').hidden = !items.length;
  clear($('#vods'), items.map(({kind, x}) => el('li', {},
    x.thumbnail_url && state.stream?.visibility === 'public'
      ? el('img', {src: x.thumbnail_url, alt: '', width: 96, height: 54}) : null,
    el('span', {class: 'grow'}, kind === 'clips' ? (x.title || `Clip of ${new Date(x.created_at).toLocaleString()}`)
                                              : `Recording of ${new Date(x.started_at).toLocaleString()}`,
      el('span', {class: 'muted'}, ` · ${Math.round((x.duration_ms || 0) / 1000)} s`)),
    el('button', {type: 'button', class: 'small', onclick: async () => {
      try {
        const src = await playable(kind, x);
        clear($('#vod-player'), el('video', {src, controls: true, autoplay: true, playsInline: true,
          class: 'vod', 'aria-label': 'Recording'}));
      } catch (e) { say($('#player-state'), e.message, 'error'); }
    }}, 'Play'),
    kind === 'recordings' && state.user && have.has('clips') ? clipForm(x) : null)));
}

// A clip cut from a recording (clips plugin: POST /api/v1/recordings/{rid}/clips): the range
// in seconds from the recording's start; the new clip joins the list above.
function clipForm(rec) {
  const len = Math.max(1, Math.floor((rec.duration_ms || 0) / 1000));
  const n = rec.id.slice(-6);
  const status = $('#vod-status'); // outside the list, which is drawn again after a clip
  const from = el('input', {type: 'number', name: 'start_s', min: 0, max: len - 1, step: 'any', value: 0, required: true, id: `from-${n}`});
  const to = el('input', {type: 'number', name: 'end_s', min: 1, max: len, step: 1, value: Math.min(len, 30), required: true, id: `to-${n}`});
  const title = el('input', {name: 'title', maxlength: 140, id: `title-${n}`});
  const f = el('form', {class: 'row'},
    el('label', {}, 'From (s)', from), el('label', {}, 'To (s)', to),
    el('label', {class: 'grow'}, 'Clip title', title),
    el('button', {type: 'submit'}, 'Cut clip'));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const start = Number(from.value), end = Number(to.value);
    if (!(end > start)) return say(status, '“To” must be after “From”.', 'error');
    const body = {start_s: start, duration_s: Math.round(end - start)};
    if (title.value.trim()) body.title = title.value.trim();
    f.querySelector('button').disabled = true;
    say(status, 'Cutting…');
    try {
      await api('POST', `/api/v1/recordings/${rec.id}/clips`, {query: {share}, body});
      say(status, `Clip made${body.title ? ` (“${body.title}”)` : ''}: it is in the list.`, 'ok');
      setupVod();
    } catch (e) {
      say(status, e.message, 'error');
      (e.field === 'duration_s' ? to : e.field === 'start_s' ? from : null)?.focus();
    } finally {
      f.querySelector('button').disabled = false;
    }
  });
  return el('details', {class: 'clip-range'}, el('summary', {}, 'Clip a part'), f);
}

// latency figures every 2 s while playing
setInterval(async () => {
  const s = await player.stats().catch(() => null);
  if (!s || !s.framesDecoded) return void ($('#latency').textContent = '');
  $('#latency').textContent = [s.width && `${s.width}×${s.height}`,
    s.rttMs !== null && `RTT ${s.rttMs} ms`, s.jitterBufferMs !== null && `buffer ${s.jitterBufferMs} ms`]
    .filter(Boolean).join(' · ');
}, 2000);

async function main() {
  state.user = await header();
  renderReactions();
  if (!/^[0-9a-f]{24}$/.test(id)) return say($('#player-state'), 'No such stream.', 'error');
  try {
    const {stream} = await api('GET', `/api/v1/streams/${id}`, {query: {share}});
    renderStream(stream);
    if (state.user && stream.owner !== state.user.id) followState(stream.owner);
    setupSchedule(stream.owner);
  } catch (e) {
    return say($('#player-state'), e instanceof ApiError && e.status === 404 ? 'No such stream.' : e.message, 'error');
  }
  sock.connect();
  setupTips();
  setupVod();
}

main();

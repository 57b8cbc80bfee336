// onair e2e: the in-page WHIP / WHEP client (RFC 9725) and its stats helpers.
//
// Everything WebRTC runs here, in the browser, exactly as a web player would: the Node side
// (lib/browser.mjs) only calls window.e2e.* through page.evaluate and gets plain JSON back.
//
//   e2e.publish(whipUrl, token, opts)  -> {ok, id, status, location, ...}   (WHIP, sendonly)
//   e2e.play(whepUrl, token, opts)     -> {ok, id, status, location, ...}   (WHEP, recvonly)
//   e2e.stop(id)                       -> {status}  DELETE the resource, close the pc
//   e2e.stats(id)                      -> per-kind inbound-rtp / outbound-rtp + state + ended
//   e2e.request(url, {method, token, body, contentType}) -> {status, contentType, body, location}
//   e2e.loopback(opts)                 -> a publisher pc and a player pc wired in-page (selftest)
//
// A session that was answered with something other than 201 is not kept: the result carries
// {ok: false, status, contentType, body} so a test can check error answers.

const sessions = new Map();
let nextId = 1;

const now = () => Math.round(performance.now());

// ---- HTTP ------------------------------------------------------------------------------------
// Signaling goes through the page's fetch (cross-origin: needs the server's CORS, with
// Location exposed). When the Node side exposed window.__e2eNodeFetch (ONAIR_E2E_SIGNAL=node)
// the request is made by Node instead, which takes CORS out of the picture for debugging.
async function request(url, {method = 'POST', token = null, body = undefined,
                             contentType = 'application/sdp', headers = {}} = {}) {
  const h = {...headers};
  if (body !== undefined && contentType) h['Content-Type'] = contentType;
  if (token) h['Authorization'] = 'Bearer ' + token;
  if (typeof window.__e2eNodeFetch === 'function')
    return await window.__e2eNodeFetch(url, {method, headers: h, body});
  const r = await fetch(url, {method, headers: h, body, mode: 'cors', credentials: 'omit'});
  return {
    status: r.status,
    contentType: r.headers.get('Content-Type') || '',
    location: r.headers.get('Location'),
    etag: r.headers.get('ETag'),
    body: await r.text(),
  };
}

// ---- SDP helpers -----------------------------------------------------------------------------
function sections(sdp) {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length);
  const out = [{kind: null, lines: []}];
  for (const l of lines) {
    if (l.startsWith('m=')) out.push({kind: l.slice(2).split(' ')[0], lines: []});
    out[out.length - 1].lines.push(l);
  }
  return out;
}

function join(secs) {
  return secs.map((s) => s.lines.join('\r\n')).join('\r\n') + '\r\n';
}

// Put b=AS (kbps) and b=TIAS (bps) on every m-section of `kind`: right after its c= line
// (RFC 4566 order: i=, c=, b=, ...) or after the m= line when it has no c= line.
export function setBandwidth(sdp, kind, kbps) {
  const secs = sections(sdp);
  for (const s of secs) {
    if (s.kind !== kind) continue;
    const kept = s.lines.filter((l) => !l.startsWith('b='));
    const at = kept.findIndex((l) => l.startsWith('c='));
    kept.splice(at >= 0 ? at + 1 : 1, 0, `b=AS:${kbps}`, `b=TIAS:${kbps * 1000}`);
    s.lines = kept;
  }
  return join(secs);
}

function withQuery(url, query) {
  if (!query) return url;
  const u = new URL(url, location.href);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, String(v));
  return u.href;
}

function waitIceGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === 'complete') done();
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// ---- sessions: state tracking ----------------------------------------------------------------
function track(s) {
  const pc = s.pc;
  const ev = (what) => s.events.push({t: now(), what});
  pc.addEventListener('connectionstatechange', () => ev('pc:' + pc.connectionState));
  pc.addEventListener('iceconnectionstatechange', () => ev('ice:' + pc.iceConnectionState));
  pc.addEventListener('track', (e) => {
    const t = e.track;
    const info = {kind: t.kind, id: t.id, ended: false, mutedAfterFlow: false, unmuted: !t.muted};
    s.tracks.push({track: t, info});
    ev('track:' + t.kind);
    t.addEventListener('ended', () => { info.ended = true; ev('ended:' + t.kind); });
    t.addEventListener('unmute', () => { info.unmuted = true; ev('unmute:' + t.kind); });
    t.addEventListener('mute', () => {
      if (info.unmuted) info.mutedAfterFlow = true;
      ev('mute:' + t.kind);
    });
    // Remote audio is only pulled (and totalSamplesReceived only grows) when something plays
    // it; attach every remote track to a media element, muted video, volume-0 audio.
    const el = document.createElement(t.kind);
    el.autoplay = true;
    el.playsInline = true;
    if (t.kind === 'video') el.muted = true; else el.volume = 0;
    el.srcObject = new MediaStream([t]);
    document.getElementById('media').appendChild(el);
    s.elements.push(el);
    el.play().catch(() => {});
  });
}

function transportState(pc) {
  for (const x of [...pc.getReceivers(), ...pc.getSenders()])
    if (x.transport) return x.transport.state;
  return null;
}

function newSession(role, pc, extra = {}) {
  const s = {id: String(nextId++), role, pc, events: [], tracks: [], elements: [], stream: null,
             location: null, ...extra};
  sessions.set(s.id, s);
  track(s);
  return s;
}

function closeSession(s) {
  try { s.pc.close(); } catch (_) { /* already closed */ }
  if (s.stream) for (const t of s.stream.getTracks()) t.stop();
  for (const el of s.elements) { el.srcObject = null; el.remove(); }
  sessions.delete(s.id);
}

// ---- publisher -------------------------------------------------------------------------------
// opts: {video: true, audio: true, simulcast: false, width: 1280, height: 720, frameRate: 30,
//        videoCodec: null ('VP8', 'H264', ... : setCodecPreferences), waitIceMs: 3000,
//        scalabilityMode: null ('L1T3': every simulcast encoding), answerReplace: null
//        ([[text, replacement]] in the answer before it is applied: lib/udp_proxy.mjs),
//        offerReplace: null}
export async function createPublisherPc(opts = {}) {
  const o = {video: true, audio: true, simulcast: false, width: 1280, height: 720, frameRate: 30,
             videoCodec: null, ...opts};
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: !!o.audio,
    video: o.video ? {width: {ideal: o.width}, height: {ideal: o.height},
                      frameRate: {ideal: o.frameRate}} : false,
  });
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require'});
  for (const t of stream.getAudioTracks())
    pc.addTransceiver(t, {direction: 'sendonly', streams: [stream]});
  for (const t of stream.getVideoTracks()) {
    t.contentHint = 'detail'; // keep the resolution: CPU adaptation lowers the frame rate first
    const init = {direction: 'sendonly', streams: [stream]};
    if (o.simulcast)
      init.sendEncodings = [
        {rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200_000},
        {rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 700_000},
        {rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000},
      ];
    if (o.simulcast && o.scalabilityMode)
      for (const e of init.sendEncodings) e.scalabilityMode = o.scalabilityMode;
    else if (o.scalabilityMode)
      init.sendEncodings = [{scalabilityMode: o.scalabilityMode}];
    const tr = pc.addTransceiver(t, init);
    if (o.videoCodec) preferCodec(tr, 'video', o.videoCodec);
  }
  return {pc, stream};
}

function preferCodec(transceiver, kind, name) {
  const caps = RTCRtpSender.getCapabilities(kind);
  if (!caps) return;
  const want = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `${kind}/${name}`.toLowerCase());
  const rest = caps.codecs.filter((c) => !want.includes(c));
  if (want.length) transceiver.setCodecPreferences([...want, ...rest]);
}

// POST the offer, expect 201 + Location, apply the answer. Returns a plain result object.
async function negotiate(s, url, token, o) {
  const offer = await s.pc.createOffer();
  await s.pc.setLocalDescription(offer);
  // The server is ICE-lite and answers with its host candidates; our candidates go in the
  // offer once gathering is complete (loopback host candidates only: this takes ~no time).
  await waitIceGathering(s.pc, o.waitIceMs ?? 3000);
  let sdp = s.pc.localDescription.sdp;
  if (o.maxVideoKbps) sdp = setBandwidth(sdp, 'video', o.maxVideoKbps);
  // [[regexp source, flags, replacement]]: what another client's offer would say (e.g. x264's
  // profile-level-id), applied to the offer as sent (the pc keeps its own)
  for (const [re, flags, to] of o.offerReplace || []) sdp = sdp.replace(new RegExp(re, flags), to);
  const postUrl = withQuery(url, o.query);
  const r = await request(postUrl, {method: 'POST', token, body: sdp});
  if (r.status !== 201) {
    closeSession(s);
    return {ok: false, status: r.status, contentType: r.contentType, body: r.body,
            location: r.location};
  }
  if (!r.location) {
    closeSession(s);
    return {ok: false, status: r.status, error: '201 without a (readable) Location header',
            contentType: r.contentType, body: r.body};
  }
  s.location = new URL(r.location, postUrl).href; // a relative Location resolves against the POST URL
  s.token = token;
  let answer = r.body;
  if (o.mungeAnswerKbps) answer = setBandwidth(answer, 'video', o.mungeAnswerKbps);
  for (const [from, to] of o.answerReplace || []) answer = answer.split(from).join(to);
  try {
    await s.pc.setRemoteDescription({type: 'answer', sdp: answer});
  } catch (e) {
    const loc = s.location;
    closeSession(s);
    return {ok: false, status: r.status, error: 'setRemoteDescription: ' + e.message,
            answer: r.body, location: loc};
  }
  s.events.push({t: now(), what: 'answered'});
  return {ok: true, id: s.id, status: r.status, location: s.location, etag: r.etag,
          contentType: r.contentType, answer: r.body, offer: sdp};
}

async function publish(whipUrl, token, opts = {}) {
  const {pc, stream} = await createPublisherPc(opts);
  const s = newSession('publisher', pc, {stream});
  const settings = stream.getVideoTracks()[0]?.getSettings() || null;
  const res = await negotiate(s, whipUrl, token, opts);
  return {...res, camera: settings && {width: settings.width, height: settings.height}};
}

// ---- player ----------------------------------------------------------------------------------
// opts: {video: true, audio: true, maxVideoKbps: null (b=AS/b=TIAS in the offer),
//        mungeAnswerKbps: null, query: null ({max_layer: 0} -> ?max_layer=0)}
function createPlayerPc(opts = {}) {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require'});
  if (opts.audio !== false) pc.addTransceiver('audio', {direction: 'recvonly'});
  if (opts.video !== false) pc.addTransceiver('video', {direction: 'recvonly'});
  return pc;
}

async function play(whepUrl, token, opts = {}) {
  const s = newSession('player', createPlayerPc(opts));
  return await negotiate(s, whepUrl, token, opts);
}

// ---- stop ------------------------------------------------------------------------------------
async function stop(id, {keepPc = false} = {}) {
  const s = sessions.get(String(id));
  if (!s) return {status: null, error: 'no such session'};
  let r = {status: null};
  if (s.location) {
    try {
      r = await request(s.location, {method: 'DELETE', token: s.token, body: undefined});
    } catch (e) {
      r = {status: null, error: String(e)};
    }
  }
  if (!keepPc) closeSession(s);
  return {status: r.status, contentType: r.contentType, body: r.body, error: r.error};
}

function closeAll() {
  for (const s of [...sessions.values()]) closeSession(s);
  for (const {ws} of sockets.values()) try { ws.close(); } catch (_) { /* closed */ }
  sockets.clear();
}

// ---- stats -----------------------------------------------------------------------------------
const INBOUND = ['framesDecoded', 'framesReceived', 'framesDropped', 'keyFramesDecoded',
                 'totalSamplesReceived', 'concealedSamples', 'bytesReceived', 'packetsReceived',
                 'packetsLost', 'nackCount', 'pliCount', 'firCount', 'freezeCount',
                 'totalFreezesDuration', 'retransmittedPacketsReceived', 'packetsDiscarded',
                 'headerBytesReceived'];

async function stats(id) {
  const s = sessions.get(String(id));
  if (!s) return null;
  const report = await s.pc.getStats();
  const inbound = {};
  const outbound = [];
  const remoteInbound = {};
  const remoteOutbound = {};
  let pair = null;
  for (const r of report.values()) {
    if (r.type === 'inbound-rtp') {
      const kind = r.kind || r.mediaType;
      const x = {ssrc: r.ssrc, frameWidth: r.frameWidth ?? null, frameHeight: r.frameHeight ?? null,
                 framesPerSecond: r.framesPerSecond ?? null};
      for (const k of INBOUND) x[k] = r[k] ?? 0;
      const prev = inbound[kind];
      if (!prev) inbound[kind] = x;
      else {
        // More than one inbound stream of a kind (should not happen behind an SFU that
        // rewrites SSRCs): add the counters, keep the size of the busiest one.
        const busiest = (x.framesDecoded > prev.framesDecoded) ? x : prev;
        for (const k of INBOUND) prev[k] += x[k];
        prev.frameWidth = busiest.frameWidth;
        prev.frameHeight = busiest.frameHeight;
        prev.streams = (prev.streams || 1) + 1;
      }
    } else if (r.type === 'outbound-rtp') {
      outbound.push({kind: r.kind, rid: r.rid ?? null, ssrc: r.ssrc, bytesSent: r.bytesSent,
                     packetsSent: r.packetsSent, framesEncoded: r.framesEncoded ?? null,
                     frameWidth: r.frameWidth ?? null, frameHeight: r.frameHeight ?? null,
                     qualityLimitationReason: r.qualityLimitationReason ?? null,
                     active: r.active ?? null, pliCount: r.pliCount ?? 0,
                     nackCount: r.nackCount ?? 0});
    } else if (r.type === 'remote-inbound-rtp') {
      // what the far end's receiver reports say about what we send (our RR from the relay)
      const kind = r.kind || r.mediaType;
      const x = remoteInbound[kind] ||= {packetsLost: 0, fractionLost: 0, reports: 0};
      x.packetsLost += r.packetsLost ?? 0;
      x.fractionLost = Math.max(x.fractionLost, r.fractionLost ?? 0);
      x.reports += r.reportsReceived ?? 0;
    } else if (r.type === 'remote-outbound-rtp') {
      // the sender reports the relay sent us (what audio/video sync needs), per kind
      const kind = r.kind || r.mediaType;
      remoteOutbound[kind] = {reportsSent: r.reportsSent ?? 0, remoteTimestamp: r.remoteTimestamp ?? null};
    }
  }
  // the pair in use: the transport's selected pair (falls back to a nominated, succeeded one)
  let selected = null;
  for (const r of report.values())
    if (r.type === 'transport' && r.selectedCandidatePairId) selected = report.get(r.selectedCandidatePairId);
  if (!selected)
    for (const r of report.values())
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') selected = r;
  if (selected) {
    const cand = (id) => {
      const c = id && report.get(id);
      return c ? {address: c.address ?? c.ip ?? null, port: c.port ?? null,
                  candidateType: c.candidateType ?? null} : null;
    };
    pair = {id: selected.id, currentRoundTripTime: selected.currentRoundTripTime ?? null,
            availableIncomingBitrate: selected.availableIncomingBitrate ?? null,
            availableOutgoingBitrate: selected.availableOutgoingBitrate ?? null,
            local: cand(selected.localCandidateId), remote: cand(selected.remoteCandidateId)};
  }
  const tracks = s.tracks.map(({track: t, info}) => ({
    kind: t.kind, readyState: t.readyState, muted: t.muted, endedEvent: info.ended,
    mutedAfterFlow: info.mutedAfterFlow,
  }));
  const connectionState = s.pc.connectionState;
  const iceConnectionState = s.pc.iceConnectionState;
  const dtlsState = transportState(s.pc);
  // "Ended": a remote track ended (or went mute after media had flowed), or the connection
  // is gone (DTLS close_notify -> closed; consent / ICE checks failing -> disconnected/failed).
  const ended = tracks.some((t) => t.readyState === 'ended' || t.endedEvent || t.mutedAfterFlow) ||
      ['disconnected', 'failed', 'closed'].includes(connectionState) ||
      ['disconnected', 'failed', 'closed'].includes(iceConnectionState) ||
      ['closed', 'failed'].includes(dtlsState);
  return {id: s.id, role: s.role, connectionState, iceConnectionState, dtlsState, ended,
          tracks, inbound, outbound, remoteInbound, remoteOutbound, pair, events: s.events.slice(-30)};
}

// ---- selftest: a publisher and a player in this page, no server ------------------------------
async function loopback(opts = {}) {
  const {pc: a, stream} = await createPublisherPc({simulcast: false, ...opts});
  const pub = newSession('publisher', a, {stream});
  // The player side is a bare pc: when it applies the publisher's sendonly offer it makes
  // its own recvonly transceivers (transceivers added up front would not be matched to the
  // offer's m-sections). WHEP-shaped players are exercised by the mock-relay selftest.
  const ply = newSession('player', new RTCPeerConnection({bundlePolicy: 'max-bundle'}));
  const b = ply.pc;
  a.addEventListener('icecandidate', (e) => e.candidate && b.addIceCandidate(e.candidate));
  b.addEventListener('icecandidate', (e) => e.candidate && a.addIceCandidate(e.candidate));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const settings = stream.getVideoTracks()[0]?.getSettings() || null;
  return {publisher: pub.id, player: ply.id,
          camera: settings && {width: settings.width, height: settings.height}};
}

// An offer as publish() would send it, without sending it: checks simulcast wiring.
async function publisherOffer(opts = {}) {
  const {pc, stream} = await createPublisherPc(opts);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const settings = stream.getVideoTracks()[0]?.getSettings() || null;
  const sdp = pc.localDescription.sdp;
  pc.close();
  for (const t of stream.getTracks()) t.stop();
  return {sdp, camera: settings && {width: settings.width, height: settings.height}};
}

// ---- WebSocket: what a player page hears about its stream ------------------------------------
// e2e.watchStream(wsUrl, streamId) -> id: a WebSocket (anonymous) that sends streams.watch and
// keeps every message; e2e.wsMessages(id) -> [{type, data, ...}].
const sockets = new Map();
let nextSocket = 1;

// token: sign the socket in first ({"type": "auth"}), so it also gets the user's own topic
// (health.update for a stream's owner)
async function watchStream(wsUrl, streamId, token = null) {
  const ws = new WebSocket(wsUrl);
  const msgs = [];
  ws.addEventListener('message', (e) => {
    try { msgs.push(JSON.parse(e.data)); } catch (_) { msgs.push({raw: String(e.data)}); }
  });
  ws.addEventListener('close', (e) => msgs.push({type: 'ws.closed', code: e.code}));
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, {once: true});
    ws.addEventListener('error', () => reject(new Error('WebSocket error')), {once: true});
  });
  if (token) ws.send(JSON.stringify({type: 'auth', id: 0, data: {token}}));
  ws.send(JSON.stringify({type: 'streams.watch', id: 1, data: {stream_id: streamId}}));
  const id = String(nextSocket++);
  sockets.set(id, {ws, msgs});
  return id;
}

function wsMessages(id) {
  return sockets.get(String(id))?.msgs ?? null;
}

// Send {type, id, data} on a socket of watchStream.
function wsSend(id, msg) {
  const x = sockets.get(String(id));
  if (!x) return false;
  x.ws.send(JSON.stringify(msg));
  return true;
}

// A publisher stops sending media (paused = true) or starts again, its connection untouched:
// every sender's track is replaced by null (RTCP and ICE go on), as when an encoder stalls.
async function pauseMedia(id, paused) {
  const s = sessions.get(String(id));
  if (!s) return false;
  s.pausedTracks ??= new Map();
  for (const sender of s.pc.getSenders()) {
    if (paused && sender.track) {
      s.pausedTracks.set(sender, sender.track);
      await sender.replaceTrack(null);
    } else if (!paused && s.pausedTracks.has(sender)) {
      await sender.replaceTrack(s.pausedTracks.get(sender));
      s.pausedTracks.delete(sender);
    }
  }
  return true;
}

window.e2e = {publish, play, stop, stats, request, closeAll, loopback, publisherOffer,
              setBandwidth, watchStream, wsMessages, wsSend, pauseMedia,
              sessions: () => [...sessions.keys()]};
window.e2eReady = true;

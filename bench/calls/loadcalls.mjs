// Many 1:1 calls' signalling at once against one onaird with the calls plugin: a load client of
// our own in Node that speaks livekit-client's /rtc/v1 protocol with LiveKit's own protobuf
// classes (@livekit/protocol, the package livekit-client uses) and real-shaped SDP, so the
// relay answers every offer (a peer per participant, its ICE credentials and DTLS identity,
// the receive slots of the other's tracks). Per call, both sides at once:
//   connect (/rtc/v1 with the join request: a gzipped JoinRequest holding the first offer:
//   a data channel and two receive slots) -> JoinResponse -> answer; as livekit-client
//   publishes: add_track audio and video -> track_published each -> an offer with a sendonly
//   audio and video -> answer; the other's tracks arrive as media_sections_requirement -> a
//   new offer -> an answer whose mid-to-track map carries the other's audio and video. That answer is the side's set-up; a call is set up when both are.
// Then both leave. No ICE, DTLS or media: the media cost per call is mediacalls.mjs's.
//
// Prints one RESULT line per run: concurrent calls, call set-up p50/p99 (both sides started
// at once -> the later side's answer with the other's tracks), join p50/p99 (connect ->
// JoinResponse, every side), onaird CPU seconds per call (the whole run: set-up and leave)
// and call set-ups per onaird core-second, and the load client's own CPU.
//
//   node bench/calls/loadcalls.mjs [calls=100] [runs=3]
//   env ONAIRD, ONAIR_PLUGIN_DIR (or BUILD); tests/livekit and bench/node-peer installed (npm ci)
import {readFile} from 'node:fs/promises';
import {join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {randomBytes} from 'node:crypto';
import {gzipSync} from 'node:zlib';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
const BUILD = resolve(ROOT, process.env.BUILD || 'build');
process.env.ONAIRD ||= join(BUILD, 'core', 'onaird');
process.env.ONAIR_PLUGIN_DIR ||= join(BUILD, 'plugins');
const {Onaird, PLUGIN_DIR} = await import(join(ROOT, 'tests', 'e2e', 'lib', 'onaird.mjs'));
const LK = join(ROOT, 'tests', 'livekit', 'node_modules');
const {AccessToken} = await import(join(LK, 'livekit-server-sdk', 'dist', 'index.js'));
const P = await import(join(LK, '@livekit', 'protocol', 'dist', 'index.mjs'));
const {default: WebSocket} = await import(join(ROOT, 'bench', 'node-peer', 'node_modules', 'ws',
  'wrapper.mjs'));

const CALLS = Number(process.argv[2] || 100);
const RUNS = Number(process.argv[3] || 3);
const KEY = 'APIbenchLoad';
const SECRET = 'bench-load-secret-0123456789abcdefghijk';
const TIMEOUT_MS = 60_000;

const cpuSeconds = async (pid) => {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (100/s)
};
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const FP = Array.from({length: 32}, () => 'AB').join(':');

// An offer shaped like livekit-client's single peer connection: a data channel, two receive
// slots (recvonly), once publishing the microphone and camera (sendonly), one BUNDLE.
function offerSdp(ufrag, cids, publishing) {
  const mids = [];
  const section = (kind, dir, cid) => {
    const mid = String(mids.length);
    mids.push(mid);
    const common = [`a=ice-ufrag:${ufrag}`, 'a=ice-pwd:clientpassword0123456789',
      `a=fingerprint:sha-256 ${FP}`, 'a=setup:actpass', `a=mid:${mid}`, 'a=rtcp-mux'];
    if (kind === 'application')
      return ['m=application 9 UDP/DTLS/SCTP webrtc-datachannel', 'c=IN IP4 0.0.0.0', ...common,
        'a=sctp-port:5000'];
    const send = dir === 'sendonly' ? [`a=msid:stream ${cid}`,
      `a=ssrc:${(kind === 'audio' ? 1000 : 2000) + Number(mid)} cname:load`] : [];
    if (kind === 'audio')
      return ['m=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', ...common, `a=${dir}`,
        'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10', ...send];
    return ['m=video 9 UDP/TLS/RTP/SAVPF 96 97', 'c=IN IP4 0.0.0.0', ...common, `a=${dir}`,
      'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli',
      'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96', ...send];
  };
  const sections = [section('application'), section('audio', 'recvonly'),
    section('video', 'recvonly')];
  if (publishing)
    sections.push(section('audio', 'sendonly', cids[0]), section('video', 'sendonly', cids[1]));
  return ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', `a=group:BUNDLE ${mids.join(' ')}`,
    ...sections.flat()].join('\r\n') + '\r\n';
}

async function token(identity, room) {
  const at = new AccessToken(KEY, SECRET, {identity, ttl: '1h'});
  at.addGrant({room, roomJoin: true});
  return at.toJwt();
}

function joinParam(sdp) {
  const join = new P.JoinRequest({
    clientInfo: new P.ClientInfo({sdk: P.ClientInfo_SDK.JS, version: '2.23.0', protocol: 16}),
    connectionSettings: new P.ConnectionSettings({autoSubscribe: true}),
    publisherOffer: new P.SessionDescription({type: 'offer', sdp, id: 1}),
  });
  const wrapped = new P.WrappedJoinRequest({compression: P.WrappedJoinRequest_Compression.GZIP,
    joinRequest: gzipSync(join.toBinary())});
  return Buffer.from(wrapped.toBinary()).toString('base64url');
}

const send = (ws, c, value) => ws.send(new P.SignalRequest({message: {case: c, value}}).toBinary());

// One side of a call: resolves {join, setup} (ms from t0) once its answer maps both of the
// other's tracks, leaving the socket open (side.ws) for the leave.
function side(url, tok, t0) {
  const ufrag = randomBytes(4).toString('hex');
  const cids = [`mic-${ufrag}`, `cam-${ufrag}`];
  let sdp = offerSdp(ufrag, cids, false);
  const out = {ws: null, join: 0, setup: 0};
  return new Promise((resolve, reject) => {
    const ws = out.ws = new WebSocket(`${url}/rtc/v1?access_token=${tok}&join_request=${joinParam(sdp)}`,
      {perMessageDeflate: false});
    let offerId = 1, published = 0;
    const timer = setTimeout(() => reject(new Error('no set-up within ' + TIMEOUT_MS + ' ms')), TIMEOUT_MS);
    ws.on('error', reject);
    const onClose = (code, why) => reject(new Error(`closed ${code} ${why}`));
    ws.on('close', onClose);
    ws.on('message', (data) => {
      const m = P.SignalResponse.fromBinary(new Uint8Array(data)).message;
      if (m.case === 'join') {
        out.join = performance.now() - t0;
        send(ws, 'addTrack', new P.AddTrackRequest({cid: cids[0], name: 'mic', type: P.TrackType.AUDIO,
          source: P.TrackSource.MICROPHONE}));
        send(ws, 'addTrack', new P.AddTrackRequest({cid: cids[1], name: 'cam', type: P.TrackType.VIDEO,
          source: P.TrackSource.CAMERA, width: 320, height: 240}));
      } else if (m.case === 'trackPublished') {
        // as livekit-client's publishTrack: add_track, then an offer with the track
        if (++published === 2) {
          sdp = offerSdp(ufrag, cids, true);
          send(ws, 'offer', new P.SessionDescription({type: 'offer', sdp, id: ++offerId}));
        }
      } else if (m.case === 'mediaSectionsRequirement') {
        // the other's tracks are in the relay: offer again, the receive slots get them
        send(ws, 'offer', new P.SessionDescription({type: 'offer', sdp, id: ++offerId}));
      } else if (m.case === 'answer' && Object.keys(m.value.midToTrackId).length === 2 &&
                 published === 2) {
        out.setup = performance.now() - t0;
        clearTimeout(timer);
        // only this listener: a later answer (to a re-offer) comes here again, and removing
        // every 'close' listener then took the leave phase's too (its socket looked unclosed)
        ws.off('close', onClose);
        resolve(out);
      }
    });
  });
}

// 2 sockets per call from one address: above the default per-address limit (256) at 200 calls;
// the client never does ICE: its peers must outlive the relay's 5 s wait for a first check
const server = new Onaird({core: {server: {max_header_bytes: 32768, max_connections_per_address: 4096,
  ...(process.env.NET_THREADS ? {network_threads: Number(process.env.NET_THREADS)} : {})},
  media: {ice_timeout: 120, connect_timeout: 300}}, plugins: {
  calls: {path: join(PLUGIN_DIR, 'calls.so'), config: {api_key: KEY, api_secret: SECRET}},
}});
await server.start();
const url = server.base.replace('http', 'ws');
try {
  for (let run = 0; run < RUNS; run++) {
    const toks = [];
    for (let i = 0; i < CALLS; i++)
      toks.push(await Promise.all([token(`a${i}`, `load-${run}-${i}`), token(`b${i}`, `load-${run}-${i}`)]));
    const c0 = await cpuSeconds(server.proc.pid);
    const u0 = process.cpuUsage();
    const w0 = performance.now();
    const calls = await Promise.all(toks.map(async ([ta, tb]) => {
      const t0 = performance.now();
      return Promise.all([side(url, ta, t0), side(url, tb, t0)]);
    }));
    const setupWall = (performance.now() - w0) / 1000;
    // both leave (LeaveRequest, then the close), and wait for onaird to see every close
    let late = 0;
    await Promise.all(calls.flat().map((s) => new Promise((r) => {
      if (s.ws.readyState !== WebSocket.OPEN) return r();
      const t = setTimeout(() => (late++, r()), 10_000);
      s.ws.on('close', () => (clearTimeout(t), r()));
      if (process.env.LOAD_MODE !== 'close')
        send(s.ws, 'leave', new P.LeaveRequest({reason: P.DisconnectReason.CLIENT_INITIATED}));
      if (process.env.LOAD_MODE !== 'leave')
        s.ws.close();
    })));
    await new Promise((r) => setTimeout(r, 500));
    const cpu = await cpuSeconds(server.proc.pid) - c0;
    const u = process.cpuUsage(u0);
    const setups = calls.map(([a, b]) => Math.max(a.setup, b.setup)).sort((x, y) => x - y);
    const joins = calls.flat().map((s) => s.join).sort((x, y) => x - y);
    console.log(`RESULT run=${run + 1} calls=${CALLS} setup_p50_ms=${pct(setups, 50).toFixed(0)} ` +
      `setup_p99_ms=${pct(setups, 99).toFixed(0)} join_p50_ms=${pct(joins, 50).toFixed(0)} ` +
      `join_p99_ms=${pct(joins, 99).toFixed(0)} all_up_s=${setupWall.toFixed(2)} ` +
      `onaird_cpu_ms_per_call=${((cpu * 1000) / CALLS).toFixed(2)} ` +
      `setups_per_core_s=${(CALLS / cpu).toFixed(0)} ` +
      `client_cpu_s=${((u.user + u.system) / 1e6).toFixed(2)} not_closed_in_10s=${late}`);
  }
} finally {
  await server.stop();
}

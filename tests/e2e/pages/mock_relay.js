// onair e2e selftest: a stand-in for the media relay, made of RTCPeerConnections in this page.
//
// lib/mock_relay.mjs runs the HTTP side (WHIP/WHEP status codes, Location, CORS, problem+json)
// and calls these functions for the WebRTC side. The "relay" answers a publisher's offer
// recvonly and a player's offer by attaching the publisher's received tracks to the player's
// transceivers (Chromium re-encodes them: it is not an SFU, only enough to prove the client).
// Not ICE-lite: the answer carries this browser's own loopback host candidates.

const streams = new Map(); // stream id -> {publisher: pc, tracks: {audio, video}, players: Set}
const resources = new Map(); // resource id -> {stream, pc, role}
let nextResource = 1;

function waitIceGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

async function answer(pc, offer) {
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  await waitIceGathering(pc, 3000);
  return pc.localDescription.sdp;
}

// Chromium sends nothing for a *remote* audio track handed to another pc; route it through
// WebAudio (the remote track must also be played by an element for its samples to flow).
let audioCtx = null;
function relayable(track) {
  if (track.kind !== 'audio') return track;
  const el = document.createElement('audio');
  el.muted = true;
  el.srcObject = new MediaStream([track]);
  el.play().catch(() => {});
  document.body.appendChild(el);
  audioCtx ??= new AudioContext();
  audioCtx.resume().catch(() => {});
  const src = audioCtx.createMediaStreamSource(new MediaStream([track]));
  const dst = audioCtx.createMediaStreamDestination();
  src.connect(dst);
  return dst.stream.getAudioTracks()[0];
}

function bad(e) {
  return {status: 400, error: String(e && e.message || e)};
}

async function acceptPublisher(streamId, offer) {
  if (streams.get(streamId)?.publisher) return {status: 409, error: 'already publishing'};
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  const st = streams.get(streamId) || {publisher: null, tracks: {}, players: new Set()};
  pc.addEventListener('track', (e) => { st.tracks[e.track.kind] = relayable(e.track); });
  let sdp;
  try {
    sdp = await answer(pc, offer);
  } catch (e) {
    pc.close();
    return bad(e);
  }
  st.publisher = pc;
  streams.set(streamId, st);
  const rid = String(nextResource++);
  resources.set(rid, {stream: streamId, pc, role: 'publisher'});
  return {status: 201, resource: rid, sdp};
}

async function acceptPlayer(streamId, offer) {
  const st = streams.get(streamId);
  if (!st || !st.publisher) return {status: 404, error: 'stream not live'};
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  try {
    await pc.setRemoteDescription({type: 'offer', sdp: offer});
  } catch (e) {
    pc.close();
    return bad(e);
  }
  for (const tr of pc.getTransceivers()) {
    const t = st.tracks[tr.receiver.track.kind];
    if (!t) continue;
    tr.direction = 'sendonly';
    await tr.sender.replaceTrack(t);
  }
  await pc.setLocalDescription(await pc.createAnswer());
  await waitIceGathering(pc, 3000);
  st.players.add(pc);
  const rid = String(nextResource++);
  resources.set(rid, {stream: streamId, pc, role: 'player'});
  return {status: 201, resource: rid, sdp: pc.localDescription.sdp};
}

// DELETE: a publisher's end closes its players' connections too (as the relay would end them).
function deleteResource(rid) {
  const r = resources.get(rid);
  if (!r) return {status: 404};
  resources.delete(rid);
  r.pc.close();
  const st = streams.get(r.stream);
  if (r.role === 'publisher' && st) {
    for (const p of st.players) p.close();
    for (const [k, v] of resources) if (v.stream === r.stream) resources.delete(k);
    streams.delete(r.stream);
  } else if (st) {
    st.players.delete(r.pc);
  }
  return {status: 200};
}

window.mockRelay = {acceptPublisher, acceptPlayer, deleteResource};
window.mockReady = true;

// onair web app: WHIP (publish) and WHEP (play) in the browser, RFC 9725 style: POST an SDP
// offer, 201 with the answer and a Location resource, DELETE to stop. The server is ICE-lite
// and answers with its host candidates; ours go in the offer once gathering completes.

function gathered(pc, ms = 2000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = {'Content-Type': 'application/sdp'};
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(url, {method: 'POST', headers, body: pc.localDescription.sdp,
                              credentials: 'omit'});
  const text = await r.text();
  if (r.status !== 201) {
    let detail = text;
    try { const j = JSON.parse(text); detail = j.detail || j.code || text; } catch { /* sdp? */ }
    const e = new Error(detail || `HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  return new URL(r.headers.get('Location'), url).href;
}

async function remove(resource, token) {
  if (!resource) return;
  const headers = token ? {Authorization: 'Bearer ' + token} : {};
  try { await fetch(resource, {method: 'DELETE', headers, credentials: 'omit'}); } catch { /* gone */ }
}

// Publish `media` (a MediaStream) to stream `id` with its stream key. -> {pc, resource, stop()}
export async function publish(id, key, media, {simulcast = true, role = null, codec = null} = {}) {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  for (const t of media.getAudioTracks()) pc.addTransceiver(t, {direction: 'sendonly', streams: [media]});
  for (const t of media.getVideoTracks()) {
    const init = {direction: 'sendonly', streams: [media]};
    const {height = 720} = t.getSettings();
    if (simulcast && height >= 360)
      init.sendEncodings = [
        {rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200_000},
        {rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 700_000},
        {rid: 'f', maxBitrate: 2_500_000},
      ];
    const tr = pc.addTransceiver(t, init);
    const caps = codec && RTCRtpSender.getCapabilities?.('video');
    if (caps) { // e.g. H.264 first (restreaming to RTMP needs it)
      const want = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/' + codec.toLowerCase());
      if (want.length) tr.setCodecPreferences([...want, ...caps.codecs.filter((c) => !want.includes(c))]);
    }
  }
  // role=cohost: a co-host publishes with her access token instead of the stream key
  const url = `/api/v1/whip/${encodeURIComponent(id)}` + (role ? `?role=${encodeURIComponent(role)}` : '');
  let resource;
  try {
    resource = await negotiate(pc, new URL(url, location.origin).href, key);
  } catch (e) {
    pc.close();
    throw e;
  }
  return {
    pc, resource,
    // ended: the server ended the session already (stream over, co-host removed): no DELETE
    async stop({ended = false} = {}) {
      if (!ended) await remove(resource, key); // first: closing first can end the session on its own
      pc.close();
    },
    // the figures health.report takes (docs/api/websocket.md)
    async report() {
      const out = {frames: 0, fps: 0, bitrate_kbps: 0, quality_limitation: 'none'};
      for (const s of (await pc.getStats()).values()) {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out.fps = Math.max(out.fps, s.framesPerSecond || 0);
          out.width = Math.max(out.width || 0, s.frameWidth || 0);
          out.height = Math.max(out.height || 0, s.frameHeight || 0);
          if (s.qualityLimitationReason && s.qualityLimitationReason !== 'none')
            out.quality_limitation = s.qualityLimitationReason;
        }
        if (s.type === 'remote-inbound-rtp' && s.roundTripTime) out.rtt_ms = Math.round(s.roundTripTime * 1000);
      }
      return out;
    },
  };
}

// A WHEP player bound to a <video>: plays, reconnects with backoff when the connection fails
// or the stream comes back, caps the simulcast layer, reports latency figures.
export class Player {
  // participant: a co-host's user id (her tracks instead of the main host's); such a player
  // does not retry: the page opens and closes it as the co-host comes and goes (cohost.*)
  constructor(video, id, {token = null, share = null, participant = null, onState = () => {}} = {}) {
    this.video = video;
    this.id = id;
    this.participant = participant;
    this.token = token;
    this.share = share;
    this.onState = onState;
    this.pc = null;
    this.resource = null;
    this.maxLayer = null;
    this.stopped = true;
    this.timer = null;
    this.backoff = 1000;
  }

  url() {
    const u = new URL(`/api/v1/whep/${encodeURIComponent(this.id)}`, location.origin);
    if (this.share) u.searchParams.set('share', this.share);
    if (this.maxLayer !== null) u.searchParams.set('max_layer', this.maxLayer);
    if (this.participant) u.searchParams.set('participant', this.participant);
    return u.href;
  }

  async start({retrying = false} = {}) {
    this.stopped = false;
    clearTimeout(this.timer);
    this.#teardown();
    if (retrying) {
      // after a failure, play again only while the stream is live (no 404s while it is off;
      // stream.started on the page's socket starts the player again)
      const live = await this.isLive();
      if (this.stopped) return;
      if (live === false) return this.onState('offline');
      if (live === null) return this.#retry();
    }
    const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
    this.pc = pc;
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.addTransceiver('video', {direction: 'recvonly'});
    const media = new MediaStream();
    pc.addEventListener('track', (e) => {
      media.addTrack(e.track);
      this.video.srcObject = media;
      this.video.play().catch(() => { /* autoplay with sound refused: controls are there */ });
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return;
      this.onState(pc.connectionState);
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') this.#retry();
    });
    this.onState('connecting');
    try {
      this.resource = await negotiate(pc, this.url(), this.token);
      this.backoff = 1000;
    } catch (e) {
      if (pc !== this.pc) return;
      this.onState(e.status === 404 || e.status === 409 ? 'offline' : 'error', e);
      this.#retry();
    }
  }

  // true / false, or null when the server cannot be reached
  async isLive() {
    try {
      const u = new URL(`/api/v1/streams/${encodeURIComponent(this.id)}`, location.origin);
      if (this.share) u.searchParams.set('share', this.share);
      const headers = this.token ? {Authorization: 'Bearer ' + this.token} : {};
      const r = await fetch(u, {headers, credentials: 'omit'});
      if (!r.ok) return r.status >= 500 ? null : false;
      return (await r.json()).stream?.status === 'live';
    } catch {
      return null;
    }
  }

  #retry() {
    if (this.stopped || this.participant) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start({retrying: true}), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 15_000);
  }

  #teardown({ended = false} = {}) {
    if (this.pc) {
      const old = this.pc;
      this.pc = null;
      old.close();
      if (!ended) remove(this.resource, this.token); // an ended stream's sessions are gone
      this.resource = null;
    }
  }

  // Cap the layer: null = the best the network allows, 0 = lowest. Applied to the session in
  // place (PATCH) when the server accepts it, else by playing again with ?max_layer=.
  async setMaxLayer(layer) {
    this.maxLayer = layer;
    if (this.resource) {
      const headers = {'Content-Type': 'application/json'};
      if (this.token) headers.Authorization = 'Bearer ' + this.token;
      const r = await fetch(this.resource, {method: 'PATCH', headers, credentials: 'omit',
                                            body: JSON.stringify({max_layer: layer})});
      if (r.ok) return;
    }
    await this.start();
  }

  async stats() {
    if (!this.pc) return null;
    const out = {framesDecoded: 0, width: 0, height: 0, rttMs: null, jitterBufferMs: null};
    for (const s of (await this.pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.framesDecoded = s.framesDecoded || 0;
        out.width = s.frameWidth || 0;
        out.height = s.frameHeight || 0;
        if (s.jitterBufferEmittedCount)
          out.jitterBufferMs = Math.round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount);
      }
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined)
        out.rttMs = Math.round(s.currentRoundTripTime * 1000);
    }
    return out;
  }

  stop({ended = false} = {}) {
    this.stopped = true;
    clearTimeout(this.timer);
    this.#teardown({ended});
    this.video.srcObject = null;
  }
}

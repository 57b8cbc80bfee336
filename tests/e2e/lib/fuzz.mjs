// onair e2e: junk datagrams for the media port (fuzz_media.test.mjs). Each generator returns
// one Buffer; `junk(ctx)` picks one at random. ctx = {usernames: ["srvUfrag:cliUfrag", ...],
// ssrcs: [numbers]} (from the WHIP/WHEP offers and answers the harness saw).
import {randomBytes, randomInt, createHmac} from 'node:crypto';

const COOKIE = 0x2112a442;
const pick = (a) => a[randomInt(a.length)];
const rnd = (lo, hi) => randomInt(lo, hi + 1); // inclusive

// ---- CRC-32 (STUN FINGERPRINT) ------------------------------------------------------------------
const CRC = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC[n] = c;
}
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// ---- STUN ---------------------------------------------------------------------------------------
function attr(type, value, declaredLen = value.length) {
  const pad = (4 - (value.length % 4)) % 4;
  const b = Buffer.alloc(4 + value.length + pad);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(declaredLen & 0xffff, 2);
  value.copy(b, 4);
  return b;
}

function header(type, len, cookie = COOKIE) {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(type, 0);
  h.writeUInt16BE(len & 0xffff, 2);
  h.writeUInt32BE(cookie >>> 0, 4);
  randomBytes(12).copy(h, 8);
  return h;
}

// A well-formed ICE binding request for `username` whose MESSAGE-INTEGRITY is computed with a
// wrong password (or is random), FINGERPRINT correct (so only the integrity check fails).
export function stunBadIntegrity(username, {useCandidate = Math.random() < 0.5, fingerprint = Math.random() < 0.7} = {}) {
  const prio = Buffer.alloc(4);
  prio.writeUInt32BE(randomInt(2 ** 31) >>> 0);
  const attrs = [attr(0x0006, Buffer.from(username)), attr(0x0024, prio),
                 attr(0x802a, randomBytes(8))]; // ICE-CONTROLLING
  if (useCandidate) attrs.push(attr(0x0025, Buffer.alloc(0)));
  let body = Buffer.concat(attrs);
  // MESSAGE-INTEGRITY: HMAC-SHA1 over the message with the length covering MI (RFC 8489)
  let msg = Buffer.concat([header(0x0001, body.length + 24), body]);
  const mi = Math.random() < 0.5 ? createHmac('sha1', randomBytes(16)).update(msg).digest() : randomBytes(20);
  msg = Buffer.concat([msg, attr(0x0008, mi)]);
  if (fingerprint) {
    msg.writeUInt16BE(msg.length - 20 + 8, 2);
    const fp = Buffer.alloc(4);
    fp.writeUInt32BE((crc32(msg) ^ 0x5354554e) >>> 0);
    msg = Buffer.concat([msg, attr(0x8028, fp)]);
  }
  return msg;
}

// Valid STUN header (binding request, magic cookie), broken body.
export function stunGarbled(username) {
  const user = Buffer.from(username || 'abcd:efgh');
  const kind = randomInt(13);
  switch (kind) {
    case 0: { // length field larger than the datagram (truncated message)
      const body = Buffer.concat([attr(0x0006, user), attr(0x0008, randomBytes(20))]);
      const cut = rnd(0, body.length - 1);
      return Buffer.concat([header(0x0001, body.length), body.subarray(0, cut)]);
    }
    case 1: { // an attribute whose length runs past the end
      const a = attr(0x0006, user, rnd(user.length + 1, 0xffff));
      return Buffer.concat([header(0x0001, a.length), a]);
    }
    case 2: { // USERNAME empty, no colon, oversized, or binary
      const v = pick([Buffer.alloc(0), Buffer.from('nocolonhere'), randomBytes(rnd(513, 1200)),
                      Buffer.from(':'), Buffer.from(username ? username.split(':')[0] + ':' : 'x:'),
                      Buffer.concat([user, Buffer.from([0, 0xff, 0x3a])])]);
      const body = Buffer.concat([attr(0x0006, v), attr(0x0008, randomBytes(20))]);
      return Buffer.concat([header(0x0001, body.length), body]);
    }
    case 3: { // MESSAGE-INTEGRITY too short / too long
      const mi = randomBytes(pick([0, 4, 19, 21, 32]));
      const body = Buffer.concat([attr(0x0006, user), attr(0x0008, mi)]);
      return Buffer.concat([header(0x0001, body.length), body]);
    }
    case 4: { // FINGERPRINT wrong size, or not last, or wrong value
      const fp = randomBytes(pick([0, 2, 4, 8]));
      const body = Buffer.concat([attr(0x0006, user), attr(0x8028, fp), attr(0x0008, randomBytes(20))]);
      return Buffer.concat([header(0x0001, body.length), body]);
    }
    case 5: { // hundreds of empty unknown attributes (comprehension-required and optional)
      const n = rnd(50, 350);
      const body = Buffer.concat(Array.from({length: n}, () => attr(rnd(0, 0xffff), Buffer.alloc(0))));
      return Buffer.concat([header(0x0001, body.length), body]);
    }
    case 6: { // header length not a multiple of 4 / odd sizes
      const body = randomBytes(rnd(1, 200));
      return Buffer.concat([header(0x0001, body.length + pick([1, 2, 3, -1])), body]);
    }
    case 7: { // other STUN classes / methods: responses, indications, errors
      const t = pick([0x0101, 0x0111, 0x0011, 0x0003, 0x0004, 0x3fff, 0x0100, 0x0110]);
      const body = Buffer.concat([attr(0x0020, randomBytes(8)), attr(0x0006, user), attr(0x0008, randomBytes(20))]);
      return Buffer.concat([header(t, body.length), body]);
    }
    case 8: { // MESSAGE-INTEGRITY cut in the middle
      const m = stunBadIntegrity(username || 'abcd:efgh', {fingerprint: false});
      return m.subarray(0, m.length - rnd(1, 20));
    }
    case 9: { // attributes after MESSAGE-INTEGRITY (must be ignored), USE-CANDIDATE among them
      const m = stunBadIntegrity(username || 'abcd:efgh', {fingerprint: false, useCandidate: false});
      const extra = Buffer.concat([attr(0x0025, Buffer.alloc(0)), attr(0x0006, Buffer.from('evil:evil'))]);
      const out = Buffer.concat([m, extra]);
      out.writeUInt16BE(out.length - 20, 2);
      return out;
    }
    case 10: // header only, or less
      return header(0x0001, pick([0, 4, 8, 0xfffc])).subarray(0, pick([20, 19, 8, 2, 1]));
    case 11: { // wrong cookie
      const body = Buffer.concat([attr(0x0006, user), attr(0x0008, randomBytes(20))]);
      return Buffer.concat([header(0x0001, body.length, randomInt(2 ** 32)), body]);
    }
    default: { // random attributes with random lengths
      const n = rnd(1, 12);
      const body = Buffer.concat(Array.from({length: n}, () => {
        const v = randomBytes(rnd(0, 64));
        return attr(pick([0x0006, 0x0008, 0x8028, 0x0024, 0x0025, 0x8029, 0x802a, 0x0020, 0x0001, rnd(0, 0xffff)]),
                    v, Math.random() < 0.3 ? rnd(0, 0xffff) : v.length);
      }));
      return Buffer.concat([header(pick([0x0001, 0x0001, 0x0101]), Math.random() < 0.2 ? rnd(0, 0xffff) : body.length), body]);
    }
  }
}

// ---- DTLS-looking (first byte 20..63) ---------------------------------------------------------------
export function dtlsLike() {
  const kind = randomInt(4);
  const payload = randomBytes(rnd(0, 1200));
  if (kind === 0) return Buffer.concat([Buffer.from([rnd(20, 63)]), payload]); // just the first byte
  const h = Buffer.alloc(13);
  h[0] = kind === 1 ? 22 : rnd(20, 25); // handshake, or alert / CCS / app data / heartbeat
  h.writeUInt16BE(pick([0xfefd, 0xfeff, 0x0303, rnd(0, 0xffff)]), 1);
  h.writeUInt16BE(pick([0, 0, 1, rnd(0, 0xffff)]), 3); // epoch
  randomBytes(6).copy(h, 5); // sequence number
  h.writeUInt16BE(kind === 3 ? rnd(0, 0xffff) : payload.length, 11); // record length (sometimes a lie)
  if (kind === 1 && payload.length >= 12) { // a ClientHello-looking handshake header, garbage after
    payload[0] = pick([1, 1, 2, 11, 16, 20]);
    payload.writeUIntBE(rnd(0, 0xffffff), 1, 3);
  }
  return Buffer.concat([h, payload]);
}

// ---- RTP / RTCP-looking (first byte 0x80..0xBF) ----------------------------------------------------
export function rtpLike(ssrcs = []) {
  const len = rnd(12, 1200);
  const b = randomBytes(len);
  b[0] = rnd(0x80, 0xbf);
  if (ssrcs.length && Math.random() < 0.6) b.writeUInt32BE(pick(ssrcs) >>> 0, 8);
  if (Math.random() < 0.5) b[1] = pick([96, 97, 100, 111, 0x80 | 96, 0x80 | 100]);
  return b;
}

export function rtcpLike(ssrcs = []) {
  const n = rnd(1, 5);
  const parts = [];
  for (let i = 0; i < n; i++) {
    const words = rnd(1, 30);
    const p = randomBytes(4 + words * 4);
    p[0] = 0x80 | rnd(0, 31) | (Math.random() < 0.2 ? 0x20 : 0); // padding bit sometimes
    p[1] = rnd(192, 210); // SR RR SDES BYE APP RTPFB PSFB XR, and beyond
    // the length field: right, too long, too short, or 0xffff
    const bad = Math.random() < 0.6;
    p.writeUInt16BE(bad ? pick([0, words + rnd(1, 100), Math.max(0, words - rnd(1, words)), 0xffff]) : words, 2);
    if (ssrcs.length && p.length >= 8 && Math.random() < 0.6) p.writeUInt32BE(pick(ssrcs) >>> 0, 4);
    parts.push(p);
  }
  const out = Buffer.concat(parts);
  return Math.random() < 0.3 ? out.subarray(0, rnd(1, out.length)) : out; // truncated
}

export function randomJunk() {
  return randomBytes(rnd(1, 1500));
}

const KINDS = ['random', 'stun-garbled', 'stun-bad-integrity', 'dtls', 'rtp', 'rtcp'];

// One junk datagram -> {kind, buf}.
export function junk(ctx) {
  const kind = pick(KINDS);
  const user = ctx.usernames?.length ? pick(ctx.usernames) : null;
  switch (kind) {
    case 'random': return {kind, buf: randomJunk()};
    case 'stun-garbled': return {kind, buf: stunGarbled(user)};
    case 'stun-bad-integrity': return {kind, buf: stunBadIntegrity(user || 'abcd:efgh')};
    case 'dtls': return {kind, buf: dtlsLike()};
    case 'rtp': return {kind, buf: rtpLike(ctx.ssrcs)};
    default: return {kind, buf: rtcpLike(ctx.ssrcs)};
  }
}

// ---- SDP bits --------------------------------------------------------------------------------------
export const ufragOf = (sdp) => (sdp.match(/^a=ice-ufrag:(\S+)/m) || [])[1] || null;
export const ssrcsOf = (sdp) => [...new Set([...sdp.matchAll(/^a=ssrc:(\d+)/gm)].map((m) => Number(m[1])))];
export const candidatesOf = (sdp) => [...sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host/gim)]
  .map((m) => ({address: m[1], port: Number(m[2])}));

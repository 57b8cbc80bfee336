// onair e2e: a user-space UDP proxy between one WebRTC client and the relay (this kernel has no
// netem). The client is pointed at the proxy by rewriting the relay's host candidate in the answer
// it applies (client.js `answerReplace`); the proxy relays every datagram both ways, one upstream
// socket per client address (so the relay sees one client per client address, as without it).
//
//   const p = await startProxy({relayPort});     // the relay's media port on 127.0.0.1
//   publish(page, url, key, {answerReplace: p.answerReplace})
//   p.lossUp = 0.05;     // drop 5 % of the RTP packets from the client to the relay (not STUN,
//                        // DTLS or RTCP: ICE and DTLS stay up, the relay sees media loss)
//   p.blackhole = true;  // drop everything both ways: the client vanished without a goodbye
//   p.stats              // {up, down, droppedUp, droppedDown, rtpDown, dupDown}: dupDown counts
//                        // RTP packets to the client whose (SSRC, seq) it already got (SRTP
//                        // leaves both in the clear; the client's SRTP replay check drops such
//                        // duplicates before its getStats() could count them)
//   await p.close()
import {createSocket} from 'node:dgram';

const isRtp = (b) => b.length >= 12 && b[0] >= 128 && b[0] <= 191 && !(b[1] >= 192 && b[1] <= 223);

export async function startProxy({relayPort, relayHost = '127.0.0.1', host = '127.0.0.1', lossUp = 0,
                                  random = Math.random} = {}) {
  const front = createSocket('udp4');
  await new Promise((res, rej) => { front.once('error', rej); front.bind(0, host, res); });
  const port = front.address().port;
  const uplinks = new Map(); // "ip:port" of a client -> its socket towards the relay
  const seenDown = new Set(); // "ssrc:seq" of RTP sent to clients
  const order = [];
  const p = {
    port, lossUp, blackhole: false,
    stats: {up: 0, down: 0, droppedUp: 0, droppedDown: 0, rtpDown: 0, dupDown: 0},
    // for client.js: the relay's candidate port becomes the proxy's
    answerReplace: [[` ${relayPort} typ host`, ` ${port} typ host`]],
    async close() {
      for (const u of uplinks.values()) u.close();
      uplinks.clear();
      await new Promise((r) => front.close(r));
    },
  };
  front.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let up = uplinks.get(key);
    if (!up) {
      up = createSocket('udp4');
      up.bind(0, host);
      up.on('message', (back) => {
        if (p.blackhole) {
          p.stats.droppedDown++;
          return;
        }
        p.stats.down++;
        if (isRtp(back)) {
          p.stats.rtpDown++;
          const id = `${back.readUInt32BE(8)}:${back.readUInt16BE(2)}`;
          if (seenDown.has(id)) p.stats.dupDown++;
          else {
            seenDown.add(id);
            order.push(id);
            if (order.length > 20000) seenDown.delete(order.shift()); // ~ the last 20000
          }
        }
        front.send(back, rinfo.port, rinfo.address);
      });
      up.on('error', () => {});
      uplinks.set(key, up);
    }
    if (p.blackhole || (p.lossUp > 0 && isRtp(msg) && random() < p.lossUp)) {
      p.stats.droppedUp++;
      return;
    }
    p.stats.up++;
    up.send(msg, relayPort, relayHost);
  });
  front.on('error', () => {});
  return p;
}

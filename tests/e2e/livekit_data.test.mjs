// onair e2e: LiveKit data channels (issue 20). The real livekit-client (2.x, pinned in
// tests/livekit) in headless Chromium opens its "_reliable" and "_lossy" data channels over
// the relay's SCTP (over the peer's DTLS); the calls plugin forwards each DataPacket to the
// room's other participants as LiveKit's server does: publishData (reliable and lossy) arrives
// as RoomEvent.DataReceived with the same bytes, topic and the sender as participant;
// destinationIdentities reach only the named participant; text streams (sendText) and RPC
// (performRpc) work on top.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (build/plugins); tests/livekit installed (npm ci)
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {waitFor, sleep} from './lib/browser.mjs';
import {livekitSuite} from './lib/livekit.mjs';

const suite = livekitSuite('APIe2eData', 'e2e-data-secret-0123456789abcdefghijklmn');
const {T} = suite;

// A page in the room: what it receives is kept in window.lk (DataReceived, text streams), and
// it answers the RPC method "greet".
async function enter(name, room, grant = {}) {
  const page = await suite.page(name);
  const tok = await suite.token(name, {room, roomJoin: true, ...grant});
  await page.evaluate(([url, tok]) => {
    const {Room, RoomEvent} = window.LivekitClient;
    const room = window.lkRoom = new Room();
    const lk = window.lk = {data: [], texts: [], result: null};
    room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => lk.data.push({
      text: new TextDecoder().decode(payload), bytes: [...payload], from: participant?.identity ?? null,
      kind, topic: topic ?? null}));
    room.registerTextStreamHandler('chat', async (reader, info) => {
      lk.texts.push({from: info.identity, text: await reader.readAll()});
    });
    room.registerRpcMethod('greet', async (d) => `hello ${d.callerIdentity}, you said ${d.payload}`);
    room.connect(url, tok).then(() => (lk.result = 'connected'),
      (e) => (lk.result = {error: String(e && e.message)}));
  }, [suite.server.base.replace('http', 'ws'), tok]);
  await waitFor(`${name} connected`, () => page.evaluate(() => window.lk.result), 20_000);
  assert.equal(await page.evaluate(() => window.lk.result), 'connected');
  return page;
}

const got = (page) => page.evaluate(() => window.lk.data);
const texts = (page) => page.evaluate(() => window.lk.texts);

function publish(page, text, opts) {
  return page.evaluate(([text, opts]) =>
    window.lkRoom.localParticipant.publishData(new TextEncoder().encode(text), opts), [text, opts]);
}

test('publishData over the data channels: reliable, lossy, addressed, sendText and RPC', T, async () => {
  const alice = await enter('alice', 'match-dc');
  const bob = await enter('bob', 'match-dc');
  const carol = await enter('carol', 'match-dc');
  const others = [bob, carol];
  for (const p of [alice, ...others])
    await waitFor('everyone sees the others', () => p.evaluate(() => window.lkRoom.remoteParticipants.size === 2), 15_000);

  // reliable: the same bytes, the topic, alice as the participant, at bob and at carol
  await publish(alice, 'hello reliable', {reliable: true, topic: 'news'});
  for (const p of others) {
    const m = await waitFor('the reliable message', async () => (await got(p)).find((d) => d.text === 'hello reliable'), 15_000);
    assert.equal(m.from, 'alice');
    assert.equal(m.topic, 'news');
    assert.equal(m.kind, 0); // DataPacket_Kind.RELIABLE
    assert.deepEqual(m.bytes, [...new TextEncoder().encode('hello reliable')]);
  }
  assert.equal((await got(alice)).length, 0, 'the sender does not get its own message');

  // binary bytes, every value, in one 60 KB message (many SCTP packets)
  await alice.evaluate(() => {
    const b = new Uint8Array(60000);
    for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 255;
    return window.lkRoom.localParticipant.publishData(b, {reliable: true, topic: 'big'});
  });
  const big = await waitFor('the 60 KB message', async () =>
    (await bob.evaluate(() => window.lk.data.filter((d) => d.topic === 'big')
      .map((d) => ({n: d.bytes.length, ok: d.bytes.every((v, i) => v === ((i * 7) & 255))})))).at(0), 15_000);
  assert.deepEqual(big, {n: 60000, ok: true});

  // lossy: nothing is retransmitted, so send until one arrives (over loopback the first does)
  let lossy = null;
  for (let i = 0; i < 40 && !lossy; i++) {
    await publish(bob, `lossy ${i}`, {reliable: false});
    await sleep(100);
    lossy = (await got(alice)).find((d) => d.text.startsWith('lossy '));
  }
  assert.ok(lossy, 'a lossy message arrives');
  assert.equal(lossy.from, 'bob');
  assert.equal(lossy.kind, 1); // DataPacket_Kind.LOSSY

  // destinationIdentities: only bob; the marker after it (same ordered channel) shows carol
  // would have had it by then
  await publish(alice, 'for bob only', {reliable: true, destinationIdentities: ['bob']});
  await publish(alice, 'marker', {reliable: true});
  for (const p of others)
    await waitFor('the marker', async () => (await got(p)).some((d) => d.text === 'marker'), 15_000);
  assert.ok((await got(bob)).some((d) => d.text === 'for bob only' && d.from === 'alice'));
  assert.ok(!(await got(carol)).some((d) => d.text === 'for bob only'), 'carol gets what was for bob');
  assert.ok(!(await got(alice)).some((d) => d.text === 'for bob only'));

  // text streams (stream header, chunks, trailer) to everyone
  await bob.evaluate(() => window.lkRoom.localParticipant.sendText('hi all', {topic: 'chat'}));
  for (const p of [alice, carol]) {
    const t = await waitFor('the text stream', async () => (await texts(p)).at(0), 15_000);
    assert.deepEqual(t, {from: 'bob', text: 'hi all'});
  }

  // RPC: carol calls alice's method (request, ack and response are addressed packets)
  const answer = await carol.evaluate(() => window.lkRoom.localParticipant.performRpc(
    {destinationIdentity: 'alice', method: 'greet', payload: 'ping'}));
  assert.equal(answer, 'hello carol, you said ping');

  for (const p of [alice, bob, carol]) await p.evaluate(() => window.lkRoom.disconnect());
});

test('a participant without canPublishData is not heard; it still receives', T, async () => {
  const dan = await enter('dan', 'match-dc2', {canPublishData: false});
  const erin = await enter('erin', 'match-dc2');
  for (const p of [dan, erin])
    await waitFor('both see each other', () => p.evaluate(() => window.lkRoom.remoteParticipants.size === 1), 15_000);
  // livekit-client itself does not check the grant: its packet reaches the server, which
  // drops it (and says so once)
  await publish(dan, 'from dan', {reliable: true});
  await waitFor('the server refusing dan\'s packet', () => /dan in match-dc2: data packets not forwarded \(no canPublishData\)/.test(suite.server.log()), 15_000);
  assert.deepEqual((await got(erin)).map((d) => d.text), []);
  // dan still receives
  await publish(erin, 'from erin', {reliable: true});
  const m = await waitFor('erin\'s message at dan', async () => (await got(dan)).find((d) => d.text === 'from erin'), 15_000);
  assert.equal(m.from, 'erin');
  for (const p of [dan, erin]) await p.evaluate(() => window.lkRoom.disconnect());
});

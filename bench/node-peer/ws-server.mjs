// The Node.js peer of bench/ws: a plain `ws` server speaking onair's hello-room envelope
// (docs/api/websocket.md "Example: the hello plugin"), so that the same wsbench client runs
// against onaird and against this, side by side.
//
//   node ws-server.mjs [port=0]    prints "listening on http://127.0.0.1:PORT"
//
// > {"type":"hello.join","id":1,"data":{"room":"lobby"}}
// < {"type":"result","id":1,"data":{"joined":"lobby"}}
// > {"type":"hello.say","id":2,"data":{"room":"lobby","text":"hi"}}
// < {"type":"hello.said","data":{"room":"lobby","text":"hi","from":null},"topic":"hello.room.lobby"}
//   (to every socket in the room) and {"type":"result","id":2,"data":{"ok":true}} to the sender.
// Errors: invalid_json, invalid_message, unknown_type, invalid_room, invalid_text, as onaird's.
// A published event is serialized once and the same Buffer is sent to every subscriber, the
// way the ws README broadcasts.
import { WebSocketServer } from 'ws';

const rooms = new Map(); // topic -> Set of sockets
const ROOM_RE = /^[a-z0-9_-]{1,32}$/;

const reply = (ws, id, data) => ws.send(JSON.stringify({ type: 'result', id, data }));
const error = (ws, id, status, code, detail) =>
  ws.send(JSON.stringify({ type: 'error', id, data: { code, status, detail } }));

function onMessage(ws, raw, isBinary) {
  if (isBinary) return error(ws, null, 400, 'invalid_message', 'only text frames are accepted');
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch (e) {
    return error(ws, null, 400, 'invalid_json', e.message);
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg))
    return error(ws, null, 400, 'invalid_message', 'a message is a JSON object');
  const id = msg.id ?? null;
  const data = msg.data ?? {};
  if (typeof msg.type !== 'string' || typeof data !== 'object' || Array.isArray(data))
    return error(ws, id, 400, 'invalid_message', 'type must be a string and data an object');
  if (msg.type !== 'hello.join' && msg.type !== 'hello.say')
    return error(ws, id, 404, 'unknown_type', `unknown message type '${msg.type}'`);
  const room = data.room;
  if (typeof room !== 'string' || !ROOM_RE.test(room))
    return error(ws, id, 400, 'invalid_room', 'room must be 1..32 characters of a-z, 0-9, _ and -');
  const topic = `hello.room.${room}`;
  if (msg.type === 'hello.join') {
    let set = rooms.get(topic);
    if (!set) rooms.set(topic, (set = new Set()));
    set.add(ws);
    ws.topics.add(topic);
    return reply(ws, id, { joined: room });
  }
  const text = data.text;
  const len = typeof text === 'string' ? [...text].length : 0;
  if (len < 1 || len > 500) return error(ws, id, 400, 'invalid_text', 'text must be 1..500 characters');
  const frame = Buffer.from(
    JSON.stringify({ type: 'hello.said', data: { room, text, from: null }, topic }));
  for (const sub of rooms.get(topic) ?? []) sub.send(frame, { binary: false });
  return reply(ws, id, { ok: true });
}

const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2] ?? 0),
                                  maxPayload: 65536, clientTracking: false });
wss.on('connection', (ws) => {
  ws.topics = new Set();
  ws.on('message', (raw, isBinary) => onMessage(ws, raw, isBinary));
  ws.on('close', () => {
    for (const t of ws.topics) rooms.get(t)?.delete(ws);
  });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening on http://127.0.0.1:${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));

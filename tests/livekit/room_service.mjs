// livekit-server-sdk's RoomServiceClient against a server, as an app backend uses it.
// stdin: {url, apiKey, apiSecret, calls: [[method, ...args]]} -> stdout: [{ok: result} |
// {error: {status, code, message}}, ...] (results as protobuf JSON)
import { RoomServiceClient } from 'livekit-server-sdk';

const input = JSON.parse(await new Promise((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
}));
const client = new RoomServiceClient(input.url, input.apiKey, input.apiSecret);
const json = (v) => (Array.isArray(v) ? v.map(json) : v && typeof v.toJson === 'function' ? v.toJson() : v);
const out = [];
for (const [method, ...args] of input.calls) {
  try {
    out.push({ok: json(await client[method](...args)) ?? null});
  } catch (e) {
    out.push({error: {status: e.status, code: e.code, message: e.message}});
  }
}
process.stdout.write(JSON.stringify(out));

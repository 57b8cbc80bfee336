// Mint LiveKit access tokens with livekit-server-sdk's AccessToken, as an app backend does.
// stdin: [{apiKey, apiSecret, identity, name?, ttl?, grant}] -> stdout: [jwt, ...]
import { AccessToken } from 'livekit-server-sdk';

const input = JSON.parse(await new Promise((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
}));
const out = [];
for (const t of input) {
  const at = new AccessToken(t.apiKey, t.apiSecret, {
    identity: t.identity, name: t.name, ttl: t.ttl ?? '10m',
  });
  at.addGrant(t.grant);
  out.push(await at.toJwt());
}
process.stdout.write(JSON.stringify(out));

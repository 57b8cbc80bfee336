// onair e2e selftest: a mock WHIP/WHEP server (node:http on 127.0.0.1, random port) whose
// WebRTC side is a page of the same browser (pages/mock_relay.js). It speaks the HTTP contract
// the real tests expect from onaird, so the scenarios in lib/scenarios.mjs run against it
// unchanged:
//   POST {base}/api/v1/whip/{id}  Authorization: Bearer <stream key>, application/sdp
//        -> 201 application/sdp + Location (relative: /api/v1/media/resources/{n})
//   POST {base}/api/v1/whep/{id}  (private streams need a Bearer token) -> 201 likewise
//   DELETE the Location -> 200; OPTIONS -> 204 with CORS preflight headers
//   errors -> application/problem+json (400 bad SDP, 401 no/invalid token, 404 not live)
import {createServer} from 'node:http';
import {randomBytes} from 'node:crypto';

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'POST, DELETE, PATCH, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, If-Match',
  'Access-Control-Expose-Headers': 'Location, ETag, Link',
};

function problem(res, status, code, detail) {
  res.writeHead(status, {...CORS, 'Content-Type': 'application/problem+json'});
  res.end(JSON.stringify({type: 'about:blank', status, code, title: code, detail}));
}

export async function startMockRelay(browser) {
  const page = await browser.newPage('mock-relay', 'mock.html', 'mockReady');
  const streams = new Map(); // id -> {key, visibility, viewerToken}
  const resources = new Map(); // resource path -> page resource id
  let n = 0;
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://x');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, CORS).end();
        return;
      }
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = Buffer.concat(chunks).toString();
      const auth = (req.headers.authorization || '').replace(/^Bearer\s+/i, '') || null;
      const m = url.pathname.match(/^\/api\/v1\/(whip|whep)\/([^/]+)$/);
      if (m && req.method === 'POST') {
        const st = streams.get(m[2]);
        if (!st) return problem(res, 404, 'stream_not_found', 'no such stream');
        if (!(req.headers['content-type'] || '').startsWith('application/sdp'))
          return problem(res, 415, 'unsupported_media_type', 'application/sdp required');
        if (m[1] === 'whip' && auth !== st.key)
          return problem(res, 401, 'unauthorized', 'stream key required');
        if (m[1] === 'whep' && st.visibility === 'private' && auth !== st.viewerToken)
          return problem(res, auth ? 403 : 401, auth ? 'forbidden' : 'unauthorized', 'private');
        if (!body.startsWith('v=0') || !/\r?\nm=/.test(body))
          return problem(res, 400, 'invalid_sdp', 'not an SDP offer');
        const fn = m[1] === 'whip' ? 'acceptPublisher' : 'acceptPlayer';
        const r = await page.evaluate(([f, id, sdp]) => window.mockRelay[f](id, sdp), [fn, m[2], body]);
        if (r.status !== 201) return problem(res, r.status, 'rejected', r.error || 'rejected');
        const loc = `/api/v1/media/resources/${++n}`;
        resources.set(loc, r.resource);
        res.writeHead(201, {...CORS, 'Content-Type': 'application/sdp', Location: loc,
                            ETag: `"${r.resource}"`});
        res.end(r.sdp);
        return;
      }
      if (req.method === 'DELETE' && resources.has(url.pathname)) {
        const rid = resources.get(url.pathname);
        resources.delete(url.pathname);
        const r = await page.evaluate((id) => window.mockRelay.deleteResource(id), rid);
        res.writeHead(r.status, CORS).end();
        return;
      }
      problem(res, 404, 'not_found', 'no such resource');
    } catch (e) {
      problem(res, 500, 'internal', String(e));
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    // the same shape as lib/onaird.mjs's target: scenarios only use this
    whipUrl: (id) => `${base}/api/v1/whip/${id}`,
    whepUrl: (id) => `${base}/api/v1/whep/${id}`,
    async newStream({visibility = 'public'} = {}) {
      const id = randomBytes(6).toString('hex');
      const s = {id, key: 'sk_' + randomBytes(16).toString('base64url'), visibility,
                 viewerToken: 'viewer-' + randomBytes(8).toString('hex')};
      streams.set(id, s);
      return s;
    },
    async close() {
      server.closeAllConnections?.();
      await new Promise((r) => server.close(() => r()));
      await page.close().catch(() => {});
    },
  };
}

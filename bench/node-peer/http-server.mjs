// The Node.js peer of bench/http: GET /api/v1/hello/{name} -> {"message":"Hello, <name>!"}, the
// same JSON as onaird's hello plugin, from one plain node:http process (keep-alive).
//   node http-server.mjs [port=0]    prints "listening on http://127.0.0.1:PORT"
import http from 'node:http';

const PREFIX = '/api/v1/hello/';
const server = http.createServer((req, res) => {
  let name = null;
  try {
    if (req.method === 'GET' && req.url.startsWith(PREFIX)) name = decodeURIComponent(req.url.slice(PREFIX.length));
  } catch {}
  const [status, body] = name && !name.includes('/') ? [200, { message: `Hello, ${name}!` }]
                                                     : [404, { status: 404, code: 'not_found', title: 'Not Found' }];
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': status === 200 ? 'application/json' : 'application/problem+json',
                          'Content-Length': Buffer.byteLength(text) });
  res.end(text);
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1',
              () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));

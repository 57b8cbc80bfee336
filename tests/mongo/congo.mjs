// Test-only MongoDB wire-compatible server for the onair mongodb backend tests.
//
//   node congo.mjs [PORT]      PORT 0 or absent: a free port is chosen
//
// Starts CongoDB (in-memory) on 127.0.0.1 and prints exactly one line
// "congodb listening on 127.0.0.1:PORT" on stdout once it accepts connections.
// SIGTERM / SIGINT stop it cleanly (exit status 0). See README.md for its limits.
import { CongoServer } from '@push.rocks/smartmongo/dist_ts/congodb/index.js';

const arg = process.argv[2] ?? '0';
const port = Number(arg);
if (!/^[0-9]+$/.test(arg) || !Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`usage: node congo.mjs [PORT]  (0..65535, got "${arg}")\n`);
    process.exit(2);
}

const server = new CongoServer({ host: '127.0.0.1', port, storage: 'memory' });
try {
    await server.start();
} catch (e) {
    process.stderr.write(`congodb: cannot listen on 127.0.0.1:${port}: ${e.message}\n`);
    process.exit(1);
}
// With port 0 the kernel chose one: ask the listening socket.
const actual = server.server?.address()?.port ?? port;
process.stdout.write(`congodb listening on 127.0.0.1:${actual}\n`);

let stopping = false;
async function shutdown(signal) {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => process.exit(0), 3000); // never hang on stop
    timer.unref();
    try {
        await server.stop();
    } catch (e) {
        process.stderr.write(`congodb: stop after ${signal}: ${e.message}\n`);
    }
    process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// Test-only MongoDB wire-compatible server for the onair mongodb backend tests.
//
//   node congo.mjs [PORT]      PORT 0 or absent: a free port is chosen
//
// Starts CongoDB (in-memory) on 127.0.0.1 and prints exactly one line
// "congodb listening on 127.0.0.1:PORT" on stdout once it accepts connections.
// SIGTERM / SIGINT stop it cleanly (exit status 0). See README.md for its limits.
import { CongoServer } from '@push.rocks/smartmongo/dist_ts/congodb/index.js';
import { setInternalBufferSize } from 'bson'; // the copy CongoDB uses (one in node_modules)

const arg = process.argv[2] ?? '0';
const port = Number(arg);
if (!/^[0-9]+$/.test(arg) || !Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`usage: node congo.mjs [PORT]  (0..65535, got "${arg}")\n`);
    process.exit(2);
}

const server = new CongoServer({ host: '127.0.0.1', port, storage: 'memory' });

// CongoDB 2.2.0 reads a connection with `state.buffer = Buffer.concat([state.buffer, data])`
// on every 'data' event (about 64 KiB each) and then tries to parse, so receiving one message
// of N bytes copies about N*N/128 KiB bytes: a 16 MiB insert (one document just under
// MongoDB's maxBsonObjectSize, which it advertises, with maxMessageSizeBytes 48000000) took
// 0.5-3 s here and more than 5 s on a slower or loaded machine, and a 45 MB batch 7 s. The
// client's socketTimeoutMS (storage.timeout_ms, 5 s) bounds sending one message, so libmongoc
// gave up with 'Failed to send "insert" command ... Failure to send all requested bytes'.
// Gather the chunks instead and join them once the whole message (its length is the first
// header field) is there: linear in the message size. The parsing is CongoDB's own
// (processMessages, unchanged). node_modules is installed from the lockfile, so the fix
// lives here; see README.md.
if (typeof server.handleData !== 'function' || typeof server.processMessages !== 'function') {
    process.stderr.write('congodb: CongoServer.handleData/processMessages not found: the ' +
                         'receive-buffer fix in congo.mjs does not fit this CongoDB version\n');
    process.exit(1);
}
server.handleData = function handleData(state, data) {
    state.pending ??= [];
    state.pendingBytes ??= 0;
    state.pending.push(Buffer.isBuffer(data) ? data : Buffer.from(data));
    state.pendingBytes += data.length;
    const join = () => {
        state.buffer = Buffer.concat([state.buffer, ...state.pending],
                                     state.buffer.length + state.pendingBytes);
        state.pending = [];
        state.pendingBytes = 0;
    };

// CongoDB serializes each reply with js-bson, whose serialization buffer is 17 MiB, and does
// not cut find/aggregate batches at 16 MiB as MongoDB does (MongoDB returns the rest with
// getMore). A first batch over 17 MiB either failed ('The value of "offset" is out of range')
// or, worse, came back truncated but well-formed: two 15 MiB documents were returned as one
// whole and one of 2 MB. Let replies grow to what the server advertises and libmongoc accepts
// in one message, maxMessageSizeBytes (48000000). Keep it exactly that: a reply that overflows
// the buffer comes out at least buffer-size long, so with the 21-byte OP_MSG header it is over
// 48000000 and libmongoc refuses it ('Message size ... is not within expected range') instead
// of reading a truncated one.
setInternalBufferSize(48000000);
    if (state.buffer.length < 4) {
        if (state.buffer.length + state.pendingBytes < 4)
            return; // not even the length yet
        join();     // at most one chunk: cheap
    }
    const need = state.buffer.readInt32LE(0); // messageLength of the first message
    if (need >= 16 && state.buffer.length + state.pendingBytes < need)
        return; // wait for the rest of this message
    if (state.pendingBytes > 0)
        join();
    this.processMessages(state);
};
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

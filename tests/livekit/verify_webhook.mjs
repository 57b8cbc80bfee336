// What a LiveKit consumer runs on a webhook: livekit-server-sdk's WebhookReceiver.receive()
// (JWT in Authorization signed with the API secret, issued by the API key, sha256 claim of the
// body; then WebhookEvent.fromJson). Reads a JSON array of {apiKey, apiSecret, body, auth} on
// stdin and prints a JSON array of {ok: true, event: <WebhookEvent as JSON>} or {ok: false,
// error}. Used by tests/integration/test_webhooks.py.
import { WebhookReceiver } from "livekit-server-sdk";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const r of JSON.parse(input)) {
  try {
    const ev = await new WebhookReceiver(r.apiKey, r.apiSecret).receive(r.body, r.auth);
    out.push({ ok: true, event: ev.toJson() });
  } catch (e) {
    out.push({ ok: false, error: String(e && e.message ? e.message : e) });
  }
}
process.stdout.write(JSON.stringify(out));

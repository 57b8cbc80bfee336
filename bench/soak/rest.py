#!/usr/bin/python3
"""REST traffic for bench/soak: a few keep-alive clients reading the stream, its chat
history, the stream list, /readyz and /metrics, and now and then registering an account,
for the given seconds at about the given requests per second in all. Prints one
`REST requests=N errors=E` line (an error is a 5xx or a failed request; 4xx are counted
apart as `client_errors`)."""
import http.client
import json
import sys
import threading
import time

port, seconds, rate, sid, token = (int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                   sys.argv[4], sys.argv[5])
CLIENTS = 4
counts = {"requests": 0, "errors": 0, "client_errors": 0}
lock = threading.Lock()
PATHS = [f"/api/v1/streams/{sid}", f"/api/v1/streams/{sid}/chat?limit=20", "/api/v1/streams",
         "/readyz", "/metrics"]


def client(no):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        i += 1
        headers = {"Authorization": f"Bearer {token}"}
        if i % 50 == 0:
            name = f"soak{no}_{i}_{int(time.time())}"
            method, path = "POST", "/api/v1/auth/register"
            body = json.dumps({"username": name, "email": f"{name}@example.org",
                               "password": "correct horse battery staple"})
            headers = {"Content-Type": "application/json"}
        else:
            method, path, body = "GET", PATHS[i % len(PATHS)], None
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock:
            counts["requests"] += 1
            if status == 0 or status >= 500:
                counts["errors"] += 1
            elif status >= 400:
                counts["client_errors"] += 1
        time.sleep(max(0.0, CLIENTS / rate - (time.monotonic() - t0)))


threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("REST " + " ".join(f"{k}={v}" for k, v in counts.items()))

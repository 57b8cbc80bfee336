// onair web app: the session (tokens), REST calls and the WebSocket client.
//
// Tokens live in localStorage under "onair.session" (never in cookies, so no request is made
// on the user's behalf by another site: CSRF does not apply; never in URLs). The strict
// Content-Security-Policy the server sends (no inline or foreign script) is what keeps them
// from other code. See plugins/web/README.md, "Security".

const KEY = 'onair.session';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.field = body && body.field;
    this.body = body;
  }
}

export const session = {
  get() {
    try { return JSON.parse(localStorage.getItem(KEY)) || null; } catch { return null; }
  },
  set(pair) {
    const s = {access_token: pair.access_token, refresh_token: pair.refresh_token,
               user: pair.user, expires_at: Date.now() + (pair.expires_in || 900) * 1000};
    localStorage.setItem(KEY, JSON.stringify(s));
    return s;
  },
  setUser(user) {
    const s = this.get();
    if (s) { s.user = user; localStorage.setItem(KEY, JSON.stringify(s)); }
  },
  clear() { localStorage.removeItem(KEY); },
  user() { return this.get()?.user || null; },
  token() { return this.get()?.access_token || null; },
  hasRole(role) { return !!this.user()?.roles?.includes(role); },
};

let refreshing = null;
async function refresh() {
  const s = session.get();
  if (!s?.refresh_token) return false;
  refreshing ??= (async () => {
    const r = await fetch('/api/v1/auth/refresh', {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({refresh_token: s.refresh_token})});
    if (r.ok) { session.set(await r.json()); return true; }
    if (r.status === 401) session.clear();
    return false;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

// An access token good for at least another 30 s (refreshed when it is about to expire).
export async function accessToken() {
  const s = session.get();
  if (!s) return null;
  if (s.expires_at - Date.now() < 30_000) await refresh();
  return session.token();
}

// api('GET', '/api/v1/streams', {query, body, headers, auth}) -> the parsed JSON (or null)
export async function api(method, path, {query, body, headers = {}, auth = true} = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {}))
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  for (let attempt = 0; ; attempt++) {
    const h = {...headers};
    const token = auth ? await accessToken() : null;
    if (token) h.Authorization = 'Bearer ' + token;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(url, {method, headers: h, credentials: 'omit',
                                body: body === undefined ? undefined : JSON.stringify(body)});
    if (r.status === 401 && token && attempt === 0 && await refresh()) continue;
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (!r.ok) throw new ApiError(r.status, json);
    return json;
  }
}

export async function signIn(login, password) {
  const pair = await api('POST', '/api/v1/auth/login', {body: {login, password}, auth: false});
  return session.set(pair);
}

export async function signUp(fields) {
  const pair = await api('POST', '/api/v1/auth/register', {body: fields, auth: false});
  return session.set(pair);
}

export async function signOut({all = false} = {}) {
  const s = session.get();
  if (s?.refresh_token) {
    try {
      await api('POST', '/api/v1/auth/logout', {body: all ? {refresh_token: s.refresh_token, all: true}
                                                          : {refresh_token: s.refresh_token}});
    } catch { /* signed out locally all the same */ }
  }
  session.clear();
}

// Reload the account (roles, verified) from the server into the session.
export async function loadMe() {
  if (!session.get()) return null;
  try {
    const {user} = await api('GET', '/api/v1/auth/me');
    session.setUser(user);
    return user;
  } catch (e) {
    if (e.status === 401) session.clear();
    return session.user();
  }
}

// ---- WebSocket ----------------------------------------------------------------------------------
// A socket that signs in with a one-time ticket (docs/auth.md), matches replies by id, hands
// events to listeners by type, and reconnects with backoff; onOpen runs after every
// (re)connect, so callers re-send their watch / join messages there and catch up.
export class Socket {
  constructor({onOpen = null, onState = null} = {}) {
    this.onOpen = onOpen;
    this.onState = onState;
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.backoff = 500;
    this.closed = false;
    this.ws = null;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    return this;
  }

  async connect() {
    this.closed = false;
    const protocols = ['onair'];
    try {
      if (await accessToken()) {
        const {ticket} = await api('POST', '/api/v1/auth/ws-ticket');
        protocols.push('ticket.' + ticket);
      }
    } catch { /* anonymous then */ }
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    const ws = new WebSocket(url, protocols);
    this.ws = ws;
    ws.addEventListener('open', async () => {
      this.backoff = 500;
      this.onState?.('open');
      try { await this.onOpen?.(this); } catch (e) { this.onState?.('error', e); }
    });
    ws.addEventListener('message', (ev) => this.#dispatch(ev.data));
    ws.addEventListener('close', () => {
      for (const p of this.pending.values()) p.reject(new ApiError(503, {code: 'disconnected', detail: 'connection lost'}));
      this.pending.clear();
      if (this.closed) return;
      this.onState?.('reconnecting');
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10_000);
    });
  }

  #dispatch(text) {
    let m;
    try { m = JSON.parse(text); } catch { return; }
    if ((m.type === 'result' || m.type === 'error') && this.pending.has(m.id)) {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.type === 'result') p.resolve(m.data);
      else p.reject(new ApiError(m.data?.status || 400, m.data));
      return;
    }
    for (const fn of this.handlers.get(m.type) || []) fn(m.data, m);
  }

  send(type, data = {}) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN)
        return reject(new ApiError(503, {code: 'disconnected', detail: 'not connected'}));
      const id = this.nextId++;
      this.pending.set(id, {resolve, reject});
      this.ws.send(JSON.stringify({type, id, data}));
    });
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }
}

// The plugins this server runs (GET /api/v1/server), asked once per page: features whose
// plugin is not there are left out of the page instead of failing.
let running = null;
export function plugins() {
  running ??= api('GET', '/api/v1/server', {auth: false})
    .then((s) => new Set((s.plugins || []).filter((p) => p.state === 'started').map((p) => p.name)))
    .catch(() => new Set());
  return running;
}

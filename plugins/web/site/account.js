// onair web app: account pages. /signup, /signin, /verify (the mailed 6-digit code; the
// mail's one-click link works too), /account (profile, the account's sessions with a sign-out
// for each, sign out here or everywhere). One module; the path picks the view.
import {api, session, signIn, signUp, signOut, loadMe} from './api.js';
import {el, $, clear, say, header, timeAgo} from './ui.js';

const view = $('#view');
const next = () => new URLSearchParams(location.search).get('next') || '/';
const safeNext = () => (next().startsWith('/') && !next().startsWith('//') ? next() : '/');

function field(label, attrs) {
  return el('label', {}, label, el('input', {required: true, ...attrs}));
}

function form(title, fields, submit, onsubmit, extra = null) {
  const status = el('p', {class: 'status', role: 'status', id: 'form-status'});
  const f = el('form', {class: 'stack', novalidate: false}, fields,
    el('button', {type: 'submit'}, submit));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const b = f.querySelector('button[type="submit"]');
    b.disabled = true;
    say(status, 'Working…');
    try {
      await onsubmit(new FormData(f), status);
    } catch (e) {
      say(status, e.message, 'error');
      if (e.field) f.querySelector(`[name="${CSS.escape(e.field)}"]`)?.focus();
    } finally {
      b.disabled = false;
    }
  });
  clear(view, el('div', {class: 'panel'}, el('h1', {}, title), f, status, extra));
  f.querySelector('input')?.focus();
}

function signupView() {
  document.title = 'Sign up · onair';
  form('Create your account', [
    field('Username', {name: 'username', autocomplete: 'username', minlength: 3, maxlength: 32, pattern: '[a-zA-Z0-9_]+'}),
    field('Email', {name: 'email', type: 'email', autocomplete: 'email'}),
    field('Password', {name: 'password', type: 'password', autocomplete: 'new-password', minlength: 10}),
  ], 'Sign up', async (d) => {
    await signUp({username: d.get('username'), email: d.get('email'), password: d.get('password')});
    // mail the code at once; the verify page takes it
    await api('POST', '/api/v1/verification/start').catch(() => {});
    location.href = '/verify';
  }, el('p', {}, 'Already have an account? ', el('a', {href: '/signin'}, 'Sign in')));
}

function signinView() {
  document.title = 'Sign in · onair';
  form('Sign in', [
    field('Username or email', {name: 'login', autocomplete: 'username'}),
    field('Password', {name: 'password', type: 'password', autocomplete: 'current-password'}),
  ], 'Sign in', async (d) => {
    await signIn(d.get('login'), d.get('password'));
    location.href = safeNext();
  }, el('p', {}, 'New here? ', el('a', {href: '/signup'}, 'Create an account')));
}

async function verifyView() {
  document.title = 'Verify email · onair';
  if (!session.get()) return void (location.href = '/signin?next=/verify');
  const me = await loadMe();
  if (me?.verified) {
    clear(view, el('div', {class: 'panel'}, el('h1', {}, 'Email verified'),
      el('p', {role: 'status'}, `${me.email} is verified.`), el('a', {href: '/'}, 'Start watching')));
    return;
  }
  const resend = el('button', {type: 'button', class: 'link', onclick: async () => {
    try {
      await api('POST', '/api/v1/verification/start');
      say($('#form-status'), `A new code was mailed to ${me.email}.`, 'ok');
    } catch (e) {
      say($('#form-status'), e.message, 'error');
    }
  }}, 'Mail me a new code');
  form('Verify your email', [
    el('p', {}, `We mailed a 6-digit code to ${me?.email}. Enter it here, or click the link in the mail.`),
    field('Code', {name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6}),
  ], 'Verify', async (d, status) => {
    await api('POST', '/api/v1/verification/verify', {body: {code: d.get('code').trim()}});
    await loadMe();
    say(status, 'Verified. Thank you!', 'ok');
    verifyView();
    header();
  }, el('p', {}, resend));
}

async function accountView() {
  document.title = 'Account · onair';
  if (!session.get()) return void (location.href = '/signin?next=/account');
  const me = await loadMe();
  const s = session.get();
  const status = el('p', {class: 'status', role: 'status'});
  const name = el('input', {name: 'display_name', value: me.display_name, maxlength: 64, required: true});
  const profile = el('form', {class: 'row'}, el('label', {class: 'grow'}, 'Display name', name),
    el('button', {type: 'submit'}, 'Save'));
  profile.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('PATCH', '/api/v1/auth/me', {body: {display_name: name.value}});
      session.setUser(r.user);
      say(status, 'Saved.', 'ok');
      header();
    } catch (e) {
      say(status, e.message, 'error');
    }
  });
  clear(view, el('div', {class: 'panel'}, el('h1', {}, 'Your account'),
    el('dl', {class: 'kv'},
      el('dt', {}, 'Username'), el('dd', {}, me.username),
      el('dt', {}, 'Email'), el('dd', {}, me.email, ' ', me.verified ? '(verified)' : el('a', {href: '/verify'}, 'verify')),
      el('dt', {}, 'Roles'), el('dd', {}, me.roles.join(', ')),
      el('dt', {}, 'Member since'), el('dd', {}, new Date(me.created_at).toLocaleDateString())),
    profile, status),
  el('div', {class: 'panel'}, el('h2', {}, 'Sessions'),
    el('p', {}, 'This browser is signed in; its access token renews itself until ',
      new Date(s.expires_at + 29 * 86400_000).toLocaleDateString(), ' at the latest.'),
    sessionsPanel(),
    el('div', {class: 'row'},
      el('button', {type: 'button', onclick: async () => { await signOut(); location.href = '/'; }}, 'Sign out of this browser'),
      el('button', {type: 'button', onclick: async () => { await signOut({all: true}); location.href = '/'; }},
        'Sign out everywhere')),
    el('p', {class: 'muted'}, 'Signing out everywhere revokes every session of this account, on every device.')));
}

// "Firefox on Linux" from a User-Agent header; the raw string when nothing is recognised.
function device(ua) {
  if (!ua) return 'Unknown device';
  const browser = [['Edg/', 'Edge'], ['OPR/', 'Opera'], ['Firefox/', 'Firefox'], ['Chrome/', 'Chrome'],
                   ['Chromium/', 'Chromium'], ['Safari/', 'Safari']].find(([k]) => ua.includes(k))?.[1];
  const os = [['Android', 'Android'], ['iPhone', 'iPhone'], ['iPad', 'iPad'], ['Windows', 'Windows'],
              ['Mac OS', 'macOS'], ['CrOS', 'ChromeOS'], ['Linux', 'Linux']].find(([k]) => ua.includes(k))?.[1];
  return browser ? (os ? `${browser} on ${os}` : browser) : ua.slice(0, 80);
}

// The account's sessions (GET /api/v1/auth/sessions), each with "Sign out" (DELETE
// /api/v1/auth/sessions/{id}: its tokens stop at once); this browser's is marked.
function sessionsPanel() {
  const list = el('ul', {class: 'list', id: 'sessions', 'aria-label': 'Signed-in sessions'});
  const status = el('p', {class: 'status', role: 'status'});
  const load = async () => {
    let r;
    try {
      r = await api('GET', '/api/v1/auth/sessions');
    } catch (e) {
      return say(status, e.message, 'error');
    }
    r.sessions.sort((a, b) => b.current - a.current); // this browser first
    clear(list, r.sessions.map((x) => {
      const name = device(x.user_agent);
      return el('li', {dataset: {session: x.id}},
        el('div', {class: 'grow'},
          el('strong', {}, name), x.current ? [' ', el('span', {class: 'badge'}, 'This browser')] : null,
          el('br'),
          el('span', {class: 'muted'}, `Signed in ${new Date(x.created_at).toLocaleString()}`,
            ` · last active ${timeAgo(x.last_used_at)}`, x.ip ? ` · from ${x.ip}` : '')),
        el('button', {type: 'button', class: 'small', 'aria-label': x.current ? "Sign out this browser" : `Sign out ${name} (signed in ${new Date(x.created_at).toLocaleString()})`,
          onclick: async (ev) => {
            ev.target.disabled = true;
            try {
              await api('DELETE', `/api/v1/auth/sessions/${encodeURIComponent(x.id)}`);
              if (x.current) {
                session.clear();
                location.href = '/';
                return;
              }
              say(status, `Signed out ${name}.`, 'ok');
              await load();
            } catch (e) {
              ev.target.disabled = false;
              say(status, e.message, 'error');
            }
          }}, 'Sign out'));
    }));
    if (!r.sessions.length) say(status, 'No other sessions.');
  };
  load();
  return el('div', {}, el('h3', {}, 'Where you are signed in'), list, status);
}

async function main() {
  await header();
  const views = {'/signup': signupView, '/signin': signinView, '/verify': verifyView, '/account': accountView};
  await (views[location.pathname] || signinView)();
}

main();

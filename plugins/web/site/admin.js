// onair web app: the admin page /admin. Server and plugins, users (roles, verify, disable),
// the stream reports queue. Needs the admin role; every action is an /api/v1/admin or
// streams route.
import {api} from './api.js';
import {el, $, clear, say, header, timeAgo} from './ui.js';

const status = (t, k) => say($('#status'), t, k);
const ROLES = ['viewer', 'streamer', 'moderator', 'admin'];

async function server() {
  const s = await api('GET', '/api/v1/server');
  const ready = await fetch('/readyz').then((r) => r.ok).catch(() => false);
  clear($('#server'),
    el('dt', {}, 'Version'), el('dd', {}, s.version || ''),
    el('dt', {}, 'SDK ABI'), el('dd', {}, `${s.abi?.major}.${s.abi?.minor}`),
    el('dt', {}, 'Ready'), el('dd', {}, ready ? 'yes' : 'no'),
    el('dt', {}, 'Up since'), el('dd', {}, timeAgo(Date.now() - s.uptime_s * 1000)));
  clear($('#plugins'), (s.plugins || []).map((p) => el('tr', {},
    el('td', {}, p.name), el('td', {}, p.version || ''),
    el('td', {}, p.error ? `${p.state}: ${p.error}` : p.state))));
}

function userRow(u) {
  const roles = el('fieldset', {class: 'row'}, el('legend', {class: 'sr-only'}, `Roles of ${u.username}`),
    ROLES.map((r) => el('label', {}, el('input', {type: 'checkbox', checked: u.roles.includes(r),
      onchange: (ev) => patch(u, {roles: ROLES.filter((x) => x === r ? ev.target.checked : u.roles.includes(x))})}), r)));
  return el('tr', {dataset: {id: u.id}},
    el('td', {}, el('strong', {}, u.username), el('br'), el('span', {class: 'muted'}, u.email)),
    el('td', {}, roles),
    el('td', {}, u.verified ? 'yes' : el('button', {type: 'button', class: 'small', onclick: () => patch(u, {verified: true})}, 'Verify')),
    el('td', {}, u.disabled ? 'disabled' : 'active'),
    el('td', {}, el('button', {type: 'button', class: 'small', onclick: () => patch(u, {disabled: !u.disabled})},
      u.disabled ? 'Enable' : 'Disable')));
}

async function patch(u, body) {
  try {
    const r = await api('PATCH', `/api/v1/admin/users/${u.id}`, {body});
    $(`#users tr[data-id="${u.id}"]`).replaceWith(userRow(r.user));
    status(`Saved ${r.user.username}.`, 'ok');
  } catch (e) {
    status(e.message, 'error');
  }
}

async function users(q) {
  const r = await api('GET', '/api/v1/admin/users', {query: {q, limit: 50}});
  clear($('#users'), r.users.map(userRow));
}

async function reports() {
  try {
    const r = await api('GET', '/api/v1/streams/reports', {query: {status: 'open', limit: 50}});
    const list = r.reports || [];
    clear($('#reports'), list.map((x) => el('li', {},
      el('a', {href: `/watch/${x.stream}`}, 'stream'), el('span', {}, x.reason || ''), el('span', {class: 'muted'}, x.text || ''),
      x.status ? el('span', {class: 'muted'}, x.status) : null,
      el('button', {type: 'button', class: 'small', onclick: () => act(x, 'resolve')}, 'Resolve'),
      el('button', {type: 'button', class: 'small', onclick: () => act(x, 'dismiss')}, 'Dismiss'))));
    if (!list.length) $('#reports').append(el('li', {class: 'muted'}, 'No open reports.'));
  } catch (e) {
    clear($('#reports'), el('li', {class: 'muted'}, e.message));
  }
}

async function act(x, what) {
  try {
    await api('POST', `/api/v1/streams/reports/${x.id}/${what}`, {body: {}});
    reports();
  } catch (e) { status(e.message, 'error'); }
}

$('#user-search').addEventListener('submit', (ev) => {
  ev.preventDefault();
  users($('#q').value.trim().toLowerCase()).catch((e) => status(e.message, 'error'));
});

async function main() {
  const me = await header();
  if (!me) return void (location.href = '/signin?next=/admin');
  if (!me.roles.includes('admin')) return status('This page is for admins.', 'error');
  await Promise.all([server(), users(''), reports()]).catch((e) => status(e.message, 'error'));
}

main();

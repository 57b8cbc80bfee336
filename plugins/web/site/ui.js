// onair web app: small DOM helpers and the page header shared by every page.
import {session, signOut, loadMe} from './api.js';

// el('button', {class: 'x', onclick: fn, 'aria-label': '...'}, 'text', child, ...)
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

// A status line with role=status (announced by screen readers): say(node, 'text', 'error')
export function say(node, text, kind = 'info') {
  if (!node) return;
  node.textContent = text || '';
  node.dataset.kind = kind;
}

export function timeAgo(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + String(r).padStart(2, '0');
}

export function money(amount, currency) {
  try {
    const digits = new Intl.NumberFormat('en', {style: 'currency', currency}).resolvedOptions()
      .maximumFractionDigits;
    return new Intl.NumberFormat(undefined, {style: 'currency', currency})
      .format(amount / 10 ** digits);
  } catch {
    return `${amount} ${currency}`;
  }
}

// The header: site name, navigation, who is signed in. Fills <header id="top">.
export async function header() {
  const top = document.getElementById('top');
  if (!top) return null;
  const user = session.get() ? await loadMe() : null;
  const here = location.pathname;
  const link = (href, text) => el('a', {href, 'aria-current': here === href ? 'page' : null}, text);
  const nav = el('nav', {'aria-label': 'Main'},
    link('/', 'Browse'),
    user && user.roles?.includes('streamer') ? link('/studio', 'Studio') : null,
    user && user.roles?.includes('admin') ? link('/admin', 'Admin') : null);
  const who = user
    ? el('div', {class: 'who'},
      user.verified ? null : el('a', {href: '/verify', class: 'badge warn'}, 'Verify email'),
      el('a', {href: '/account'}, user.display_name || user.username),
      el('button', {type: 'button', class: 'link', onclick: async () => {
        await signOut();
        location.href = '/';
      }}, 'Sign out'))
    : el('div', {class: 'who'}, link('/signin', 'Sign in'), el('a', {href: '/signup', class: 'button'}, 'Sign up'));
  clear(top, el('a', {href: '/', class: 'brand', 'aria-label': 'onair home'},
    el('img', {src: '/static/icon.svg', alt: '', width: 28, height: 28}), 'onair'), nav, who);
  return user;
}

// Parameters after '#' (kept out of requests, logs and Referer): #share=...&token=...
export function hashParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

export const REACTIONS = {heart: '❤️', laugh: '😂', clap: '👏', fire: '🔥', wow: '😮', sad: '😢'};

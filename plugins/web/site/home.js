// onair web app: the browse page /. Live streams, upcoming scheduled streams, recent ones.
import {api, plugins} from './api.js';
import {el, $, clear, say, header, timeAgo} from './ui.js';

function card(s) {
  return el('li', {}, el('a', {href: `/watch/${s.id}`},
    s.status === 'live' ? el('span', {class: 'badge'}, 'LIVE') : el('span', {class: 'muted'}, s.status),
    el('span', {class: 'title'}, s.title),
    el('span', {class: 'muted'}, s.status === 'live' ? `${s.viewer_count ?? 0} watching`
      : s.ended_at ? `ended ${timeAgo(s.ended_at)}` : `created ${timeAgo(s.created_at)}`),
    s.category ? el('span', {class: 'muted'}, ' · ', s.category) : null));
}

async function main() {
  await header();
  try {
    const [live, recent] = await Promise.all([
      api('GET', '/api/v1/streams', {query: {status: 'live', limit: 24}}),
      api('GET', '/api/v1/streams', {query: {status: 'ended', limit: 12}}),
    ]);
    clear($('#live'), live.streams.map(card));
    if (!live.streams.length) $('#live').append(el('li', {class: 'muted'}, 'Nobody is live right now.'));
    clear($('#recent'), recent.streams.map(card));
  } catch (e) {
    say($('#status'), e.message, 'error');
  }
  if (!(await plugins()).has('scheduling')) {
    $('#upcoming').append(el('li', {class: 'muted'}, 'No schedule on this server.'));
    return;
  }
  try {
    const r = await api('GET', '/api/v1/schedules/upcoming', {query: {limit: 10}});
    const items = r.items || [];
    clear($('#upcoming'), items.map((o) => el('li', {},
      el('strong', {}, o.title),
      el('span', {class: 'muted'}, new Date(o.start).toLocaleString(), ` · ${o.duration_min} min`))));
    if (!items.length) $('#upcoming').append(el('li', {class: 'muted'}, 'Nothing scheduled.'));
  } catch {
    $('#upcoming').append(el('li', {class: 'muted'}, 'No schedule available.'));
  }
}

main();

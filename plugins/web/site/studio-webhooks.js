// onair web app: the studio's webhooks panel (plugins/webhooks). The selected stream's
// endpoints: add one (its signing secret is shown once, in the answer to create), pause and
// resume one, make it a new secret (shown once too), delete one, and see its recent deliveries
// with their state and the receiver's HTTP status, replaying a dead-lettered one. Only the public REST API: see plugins/webhooks/README.md.
import {api} from './api.js';
import {el, $, clear, say, timeAgo} from './ui.js';

const w = {stream: null, open: null, timer: 0};
const OFF = {owner: 'paused', failing: 'off: it kept failing', removed_from_config: 'off: not configured any more'};
const status = (t, k) => say($('#wh-status'), t, k);

// Show the panel for stream s (or hide it when the plugin does not run).
export async function showWebhooks(s, running) {
  $('#webhooks-panel').hidden = !running;
  if (!running) return;
  if (w.stream !== s.id) {
    w.open = null;
    clear($('#wh-secret'));
    status('');
  }
  w.stream = s.id;
  await loadEndpoints();
}

async function loadEndpoints() {
  let r;
  try {
    r = await api('GET', '/api/v1/webhooks/endpoints', {query: {stream: w.stream, limit: 100}});
  } catch (e) {
    return status(e.message, 'error');
  }
  const list = r.endpoints || [];
  if (w.open && !list.some((x) => x.id === w.open)) w.open = null;
  clear($('#wh-endpoints'), list.map((x) => el('li', {dataset: {id: x.id}},
    el('div', {class: 'grow'},
      el('code', {}, x.url), el('br'),
      el('span', {class: 'muted'}, x.events.join(', '), x.description ? ` · ${x.description}` : ''), ' ',
      x.enabled ? (x.failing_since ? el('span', {class: 'badge warn'}, `failing since ${timeAgo(x.failing_since)}`) : null)
                : el('span', {class: 'badge warn'}, OFF[x.disabled_reason] || 'off')),
    el('button', {type: 'button', class: 'small', 'aria-expanded': w.open === x.id ? 'true' : 'false',
      'aria-controls': 'wh-deliveries', 'aria-label': `Deliveries to ${x.url}`,
      onclick: () => { w.open = w.open === x.id ? null : x.id; loadEndpoints(); }}, 'Deliveries'),
    el('button', {type: 'button', class: 'small toggle', 'aria-pressed': x.enabled ? 'true' : 'false',
      'aria-label': `Sending to ${x.url}`, onclick: async () => {
        try { // turning it on again starts afresh: failing state cleared, the queue moves on
          await api('PATCH', `/api/v1/webhooks/endpoints/${x.id}`, {body: {enabled: !x.enabled}});
          status(`${x.enabled ? 'Paused' : 'Resumed'} ${x.url}.`, 'ok');
        } catch (e) { status(e.message, 'error'); }
        loadEndpoints();
      }}, 'Sending'),
    el('button', {type: 'button', class: 'small', 'aria-label': `New secret for ${x.url}`, onclick: async () => {
      if (!confirm(`Make a new signing secret for ${x.url}? The old one stops working at once.`)) return;
      try {
        const r = await api('POST', `/api/v1/webhooks/endpoints/${x.id}/secret/rotate`);
        showSecret(r.endpoint.url, r.secret);
        status('New secret made.', 'ok');
      } catch (e) { status(e.message, 'error'); }
    }}, 'New secret'),
    el('button', {type: 'button', class: 'small', 'aria-label': `Delete the endpoint ${x.url}`,
      onclick: async () => {
        try {
          await api('DELETE', `/api/v1/webhooks/endpoints/${x.id}`);
          status(`Deleted ${x.url}.`, 'ok');
          clear($('#wh-secret'));
        } catch (e) { status(e.message, 'error'); }
        loadEndpoints();
      }}, 'Delete'))));
  if (!list.length) $('#wh-endpoints').append(el('li', {class: 'muted'}, 'No endpoints for this stream.'));
  await loadDeliveries(list.find((x) => x.id === w.open));
}

// The open endpoint's newest deliveries, read again every 5 s while it is open.
async function loadDeliveries(endpoint) {
  clearTimeout(w.timer);
  const box = $('#wh-deliveries');
  if (!endpoint) return void clear(box);
  let r;
  try {
    r = await api('GET', `/api/v1/webhooks/endpoints/${endpoint.id}/deliveries`, {query: {limit: 20}});
  } catch (e) {
    return status(e.message, 'error');
  }
  const rows = (r.deliveries || []).map((d) => el('tr', {dataset: {state: d.state}},
    el('td', {}, d.event, el('br'), el('span', {class: 'muted'}, timeAgo(d.created_at))),
    el('td', {}, el('span', {class: 'delivery-state', dataset: {state: d.state}}, d.state), el('br'),
      el('span', {class: 'muted'}, d.last_status ? `HTTP ${d.last_status}` : (d.last_error || 'no answer yet'),
        d.attempts > 1 ? ` · ${d.attempts} attempts` : '')),
    el('td', {}, d.state === 'dead' ? el('button', {type: 'button', class: 'small',
      'aria-label': `Replay the ${d.event} delivery`, onclick: async () => {
        try {
          await api('POST', `/api/v1/webhooks/endpoints/${endpoint.id}/deliveries/${d.id}/replay`);
          status('Queued again.', 'ok');
        } catch (e) { status(e.message, 'error'); }
        loadDeliveries(endpoint);
      }}, 'Replay') : '')));
  clear(box, el('table', {class: 'table'},
    el('caption', {}, 'Recent deliveries to ', el('code', {}, endpoint.url)),
    el('thead', {}, el('tr', {}, ['Event', 'Result', ''].map((h) =>
      el('th', {scope: 'col'}, h || el('span', {class: 'sr-only'}, 'Actions'))))),
    el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', {colspan: 3, class: 'muted'}, 'Nothing sent yet.')))));
  w.timer = setTimeout(() => {
    if (w.open === endpoint.id && !document.hidden) loadDeliveries(endpoint);
  }, 5000);
}

// The server shows a secret once (create, rotate): here, now.
function showSecret(url, secret) {
  clear($('#wh-secret'), el('p', {}, 'Signing secret for ', el('code', {}, url),
    ' (copy it now: it is not shown again):'),
  el('div', {class: 'row'}, el('code', {id: 'wh-secret-value'}, secret),
    el('button', {type: 'button', class: 'copy small', dataset: {text: secret}}, 'Copy')));
}

$('#wh-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const events = $('#wh-events').value.split(/[\s,]+/).filter(Boolean);
  const body = {stream: w.stream, url: $('#wh-url').value.trim(), events};
  if ($('#wh-description').value.trim()) body.description = $('#wh-description').value.trim();
  try {
    const r = await api('POST', '/api/v1/webhooks/endpoints', {body});
    showSecret(r.endpoint.url, r.secret);
    $('#wh-url').value = '';
    $('#wh-description').value = '';
    status('Endpoint added.', 'ok');
    w.open = r.endpoint.id;
    loadEndpoints();
  } catch (e) {
    status(e.message, 'error');
    if (e.field === 'url') $('#wh-url').focus();
    else if (e.field === 'events') $('#wh-events').focus();
  }
});

// onair web app: the studio's schedule editor (plugins/scheduling). The streamer's active
// schedules (GET /api/v1/schedules?mine=1) with Edit (PATCH), Skip next (a weekly series'
// next occurrence: POST .../cancel) and Cancel (DELETE: the whole series); the form creates one (POST), one-off or weekly, in the browser's time zone.
// Only the public REST API: see plugins/scheduling/README.md.
import {api} from './api.js';
import {el, $, clear, say} from './ui.js';

const DAYS = {MO: 'Mon', TU: 'Tue', WE: 'Wed', TH: 'Thu', FR: 'Fri', SA: 'Sat', SU: 'Sun'};
const zone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const status = (t, k) => say($('#sch-status'), t, k);
let editing = null; // the schedule being edited, or null: the form creates one
let loaded = false;

export async function showSchedule(running) {
  $('#schedule-panel').hidden = !running;
  if (running && !loaded) {
    loaded = true;
    await loadSchedules();
  }
}

// "2027-03-20T19:00" for a datetime-local input, in this browser's zone
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

async function loadSchedules() {
  let r;
  try {
    r = await api('GET', '/api/v1/schedules', {query: {mine: 1, limit: 50}});
  } catch (e) {
    return status(e.message, 'error');
  }
  const items = (r.items || []).filter((x) => !x.cancelled);
  clear($('#schedules'), items.map((x) => el('li', {dataset: {id: x.id}},
    el('div', {class: 'grow'}, el('strong', {}, x.title), el('br'),
      el('span', {class: 'muted'},
        x.next_occurrence ? `next ${new Date(x.next_occurrence).toLocaleString()}` : 'no more occurrences',
        ` · ${x.duration_min} min`,
        x.recurrence ? ` · weekly on ${x.recurrence.days.map((d) => DAYS[d] || d).join(', ')}` +
                       (x.recurrence.until ? ` until ${x.recurrence.until}` : '') : '')),
    el('button', {type: 'button', class: 'small', 'aria-label': `Edit ${x.title}`, onclick: () => edit(x)}, 'Edit'),
    x.recurrence && x.next_occurrence ? el('button', {type: 'button', class: 'small',
      'aria-label': `Skip ${x.title} on ${new Date(x.next_occurrence).toLocaleDateString()}`, onclick: async () => {
        try { // one occurrence: the series goes on
          await api('POST', `/api/v1/schedules/${x.id}/cancel`, {body: {occurrence: x.next_occurrence}});
          status(`Skipped “${x.title}” on ${new Date(x.next_occurrence).toLocaleString()}.`, 'ok');
        } catch (e) { status(e.message, 'error'); }
        loadSchedules();
      }}, 'Skip next') : null,
    el('button', {type: 'button', class: 'small', 'aria-label': `Cancel ${x.title}`, onclick: async () => {
      if (!confirm(`Cancel “${x.title}”${x.recurrence ? ' and all its occurrences' : ''}?`)) return;
      try {
        await api('DELETE', `/api/v1/schedules/${x.id}`);
        status(`Cancelled “${x.title}”.`, 'ok');
        if (editing?.id === x.id) reset();
      } catch (e) { status(e.message, 'error'); }
      loadSchedules();
    }}, 'Cancel'))));
  if (!items.length) $('#schedules').append(el('li', {class: 'muted'}, 'Nothing scheduled.'));
}

function days() {
  return [...document.querySelectorAll('#schedule-form .days input:checked')].map((i) => i.value);
}

function edit(x) {
  editing = x;
  $('#schedule-form-h').textContent = `Edit “${x.title}”`;
  $('#sch-submit').textContent = 'Save changes';
  $('#sch-new').hidden = false;
  $('#sch-title').value = x.title;
  $('#sch-start').value = localInput(Date.parse(x.next_occurrence || x.start));
  $('#sch-duration').value = x.duration_min;
  $('#sch-category').value = x.category || '';
  for (const i of document.querySelectorAll('#schedule-form .days input'))
    i.checked = !!x.recurrence?.days.includes(i.value);
  $('#sch-until').value = x.recurrence?.until || '';
  $('#sch-title').focus();
}

function reset() {
  editing = null;
  $('#schedule-form').reset();
  $('#schedule-form-h').textContent = 'Schedule a stream';
  $('#sch-submit').textContent = 'Schedule';
  $('#sch-new').hidden = true;
}

$('#sch-new').addEventListener('click', () => { reset(); status(''); });

const FIELDS = {title: '#sch-title', start: '#sch-start', duration_min: '#sch-duration', category: '#sch-category',
                'recurrence.until': '#sch-until', recurrence: '#sch-until'};

$('#schedule-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const start = new Date($('#sch-start').value); // the browser's local time
  if (Number.isNaN(start.getTime())) return status('Pick when it starts.', 'error');
  const d = days();
  const body = {title: $('#sch-title').value.trim(), start: start.toISOString(), tz: zone(),
                duration_min: Number($('#sch-duration').value),
                category: $('#sch-category').value.trim() || null,
                recurrence: d.length ? {days: d, until: $('#sch-until').value || null} : null};
  try {
    if (editing) {
      // the start only when it moved: PATCH refuses a start in the past
      if (start.getTime() === Date.parse(editing.next_occurrence || editing.start)) delete body.start;
      const r = await api('PATCH', `/api/v1/schedules/${editing.id}`, {body});
      status(`Saved “${(r.schedule || r).title}”.`, 'ok');
    } else {
      const r = await api('POST', '/api/v1/schedules', {body});
      status(`Scheduled “${(r.schedule || r).title}”.`, 'ok');
    }
    reset();
    loadSchedules();
  } catch (e) {
    status(e.message, 'error');
    if (e.field && FIELDS[e.field]) $(FIELDS[e.field]).focus();
  }
});

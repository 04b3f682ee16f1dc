// Live events: the event log as it happens, from the server-sent events of
// GET /api/v1/admin/events/live, read with fetch() (EventSource cannot send the bearer
// token). Filter by type (comma-separated, sent to the server as `type=`); reconnects
// with a growing delay when the stream drops.

import { api } from '../api.js';
import { errorText, h, time } from '../dom.js';
import { readEventStream } from '../sse.js';
import { makeHash, replaceHash } from '../router.js';
import { actorLabel, eventTone } from './user.js';

const MAX_ROWS = 500;

function actorCell(actor) {
  if (!actor || actor.kind === 'anonymous' || actor.kind === 'system') return actorLabel(actor);
  return h('span', {}, actor.label || actor.id || '', h('span', { class: 'actor-kind' }, String(actor.kind).replace('_', ' ')));
}

/** Emails of the users events are about, looked up once per user while the page is open. */
function subjectNames(signal) {
  const known = new Map();
  return (id) => {
    if (!known.has(id)) {
      known.set(id, api('GET', `/api/v1/admin/users/${encodeURIComponent(id)}`, { signal })
        .then((d) => (d.user ?? d).email ?? null)
        .catch(() => null));
    }
    return known.get(id);
  };
}

export function render(main, { params }) {
  let type = (params.get('type') ?? '').replace(/\s+/g, '');
  let controller = null;
  let stopped = false;
  let paused = false;
  let retryTimer = null;
  let attempt = 0;
  let lastId = null;
  let received = 0;
  let held = []; // events that came while paused
  const names = new AbortController();
  const nameOf = subjectNames(names.signal);

  const status = h('span', { class: 'live-status', dataset: { state: 'connecting' }, id: 'live-status' }, 'Connecting…');
  const count = h('span', { class: 'muted', id: 'live-count' }, '0 events');
  const typeInput = h('input', { type: 'text', name: 'type', value: type, list: 'event-types-live', placeholder: 'All types (or e.g. UserDeactivated,SessionStarted)', autocomplete: 'off', spellcheck: 'false' });
  const pauseButton = h('button', { type: 'button', onclick: () => {
    paused = !paused;
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    pauseButton.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      const waiting = held;
      held = [];
      waiting.forEach(show);
    }
    updateCount();
  } }, 'Pause');
  const rows = h('tbody', {});
  const empty = h('p', { class: 'empty', id: 'live-empty' }, 'Waiting for events… Anything that happens from now on shows up here.');
  const table = h('table', { class: 'table live-table', hidden: true },
    h('thead', {}, h('tr', {}, ['Time', 'Event', 'Summary', 'Actor', 'Subject'].map((t) => h('th', { scope: 'col' }, t)))),
    rows);

  const apply = () => {
    const next = typeInput.value.replace(/\s+/g, '');
    if (next === type) return;
    type = next;
    replaceHash(makeHash('live', { type }));
    lastId = null;
    connect();
  };
  typeInput.addEventListener('change', apply);
  typeInput.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Live events'), status),
    h('div', { class: 'card' },
      h('div', { class: 'toolbar' },
        h('label', { class: 'field grow' }, 'Event types', typeInput),
        h('datalist', { id: 'event-types-live' },
          ['UserRegistered', 'EmailVerified', 'SessionStarted', 'SessionRevoked', 'LoginFailed', 'UserDeactivated', 'UserReactivated', 'RoleChanged', 'PlanChanged', 'UserErased', 'UsageRecorded', 'MessagePosted']
            .map((t) => h('option', { value: t }))),
        h('button', { type: 'button', class: 'align-end', onclick: apply }, 'Apply'),
        pauseButton,
        h('button', { type: 'button', class: 'align-end', onclick: () => { rows.replaceChildren(); held = []; received = 0; updateCount(); } }, 'Clear'),
        h('span', { class: 'spacer' }),
        h('span', { class: 'toolbar-note' }, count)),
      h('div', { class: 'table-wrap' }, table), empty));

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function updateCount() {
    count.textContent = `${received} event${received === 1 ? '' : 's'}${paused ? ` (paused, ${held.length} held)` : ''}`;
    table.hidden = rows.children.length === 0;
    empty.hidden = rows.children.length !== 0;
  }

  function add(e) {
    received++;
    if (paused) {
      held.push(e);
      if (held.length > MAX_ROWS) held.shift();
    } else show(e);
    updateCount();
  }

  function show(e) {
    let subject;
    if (e.subject_id) {
      const label = h('code', {}, e.subject_id.slice(0, 8));
      subject = h('a', { href: `#/users/${encodeURIComponent(e.subject_id)}`, title: e.subject_id, class: 'subject' }, label);
      nameOf(e.subject_id).then((email) => { if (email) label.replaceWith(email); });
    } else {
      subject = h('span', { class: 'muted', title: `${e.aggregate_type ?? ''} ${e.aggregate_id ?? ''}` }, e.aggregate_type ?? '—');
    }
    rows.prepend(h('tr', { class: `live-row tone-${eventTone(e.event_type) || 'none'} fresh`, dataset: { eventType: e.event_type ?? '', eventId: e.event_id ?? '' } },
      h('td', { class: 'nowrap' }, time(e.recorded_at)),
      h('td', { class: 'nowrap' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('code', { class: 'etype' }, e.event_type ?? '?')),
      h('td', {}, e.summary || ''),
      h('td', { class: 'who' }, actorCell(e.actor)),
      h('td', { class: 'who' }, subject)));
    while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
  }

  async function connect() {
    controller?.abort();
    clearTimeout(retryTimer);
    if (stopped) return;
    const mine = new AbortController();
    controller = mine;
    setStatus('connecting', attempt ? 'Reconnecting…' : 'Connecting…');
    try {
      const headers = lastId ? { 'last-event-id': lastId } : {};
      const res = await api('GET', '/api/v1/admin/events/live', { query: { type }, signal: mine.signal, headers, raw: true });
      if (mine.signal.aborted) return;
      setStatus('open', type ? `Live · ${type.split(',').join(', ')}` : 'Live · all events');
      attempt = 0;
      await readEventStream(res, {
        onEvent: (message) => {
          if (message.id) lastId = message.id;
          if (message.event !== 'event' && message.event !== 'message') return;
          try {
            add(JSON.parse(message.data));
          } catch (err) {
            console.warn('an event that is not JSON', message.data, err);
          }
        },
      });
      if (mine.signal.aborted) return;
      retry('The stream ended');
    } catch (err) {
      if (mine.signal.aborted || err.name === 'AbortError') return;
      if (err.status === 401 || err.status === 403) return; // the app shows sign-in or refusal
      retry(errorText(err));
    }
  }

  function retry(why) {
    if (stopped) return;
    attempt++;
    const delay = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
    setStatus('closed', `${why}; reconnecting in ${Math.round(delay / 1000)} s`);
    retryTimer = setTimeout(connect, delay);
  }

  updateCount();
  connect();
  return () => {
    stopped = true;
    clearTimeout(retryTimer);
    controller?.abort();
    names.abort();
  };
}

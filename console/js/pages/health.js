// Health: readiness (PostgreSQL, NATS), the relay's position and lag, and each read
// model's state, position, lag and last error, with a Rebuild button per read model.
// Refreshes every 5 seconds while the page is open.

import { api } from '../api.js';
import { badge, confirmDialog, errorBox, errorText, fill, h, localDateTime, number, toast } from '../dom.js';

const EVERY_MS = 5000;

/** Lag as words, whether the API gives a number of events or {events, seconds}. */
export function lagText(lag) {
  if (lag === null || lag === undefined) return '—';
  if (typeof lag === 'number') return `${number(lag)} event${lag === 1 ? '' : 's'}`;
  if (typeof lag === 'object') {
    const events = lag.events ?? lag.lag_events;
    const seconds = lag.seconds ?? lag.lag_seconds;
    const parts = [];
    if (events !== undefined) parts.push(`${number(events)} event${events === 1 ? '' : 's'}`);
    if (seconds !== undefined) parts.push(`${Number(seconds).toFixed(1)} s`);
    return parts.join(' · ') || JSON.stringify(lag);
  }
  return String(lag);
}

function lagEvents(lag) {
  if (typeof lag === 'number') return lag;
  return lag?.events ?? lag?.lag_events ?? 0;
}

/** A read model or the relay as the API reports it (`LagCheck`: status, lag_events,
 * lag_seconds; older drafts said state and lag). */
function lagOf(p) {
  if (p?.lag !== undefined) return p.lag;
  if (p?.lag_events === undefined && p?.lag_seconds === undefined) return null;
  return { events: p.lag_events, seconds: p.lag_seconds };
}
const stateOf = (p) => p?.state ?? p?.status ?? '?';

const STATE_KIND = { running: 'ok', ok: 'ok', caught_up: 'ok', failed: 'danger', rebuilding: 'warn', stopped: 'dark' };

export function render(main) {
  const controller = new AbortController();
  let timer = null;
  let stopped = false;
  const rebuilding = new Set();

  const updated = h('span', { class: 'muted', id: 'health-updated' }, 'Loading…');
  const cards = h('div', { class: 'cards' });
  const table = h('div', { class: 'table-wrap' });
  const problem = h('div', { hidden: true });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Health'), updated),
    problem,
    cards,
    h('section', { class: 'card' },
      h('div', { class: 'section-head' }, h('h2', {}, 'Read models'), h('span', { class: 'muted' }, 'Refreshed every 5 s')),
      table));

  async function load() {
    clearTimeout(timer);
    try {
      const [data, ready] = await Promise.all([
        api('GET', '/api/v1/admin/projections', { signal: controller.signal }),
        readiness(controller.signal),
      ]);
      if (stopped) return;
      fill(problem);
      problem.hidden = true;
      renderCards(data.relay, ready, data.head);
      renderTable(data.projections ?? []);
      updated.textContent = `Updated ${localDateTime(new Date()).slice(11)}`;
    } catch (err) {
      if (stopped || err.name === 'AbortError' || err.status === 401 || err.status === 403) return;
      fill(problem, errorBox(err));
      problem.hidden = false;
      updated.textContent = `Update failed ${localDateTime(new Date()).slice(11)}`;
    }
    if (!stopped) timer = setTimeout(load, EVERY_MS);
  }

  function card(title, value, sub, kind = '') {
    return h('div', { class: `card stat ${kind}` }, h('div', { class: 'stat-title' }, title), h('div', { class: 'stat-value' }, value), sub ? h('div', { class: 'stat-sub muted' }, sub) : null);
  }

  function renderCards(relay, ready, head) {
    const check = (c) => (c ? (c.ok ? 'ok' : 'down') : '—');
    const ms = (c) => (c?.latency_ms !== undefined && c?.latency_ms !== null ? `${Number(c.latency_ms).toFixed(1)} ms` : c?.detail ?? '');
    fill(cards,
      card('Service', ready ? (ready.status === 'ok' ? 'ready' : ready.status ?? '—') : 'unknown', ready ? 'GET /health/ready' : 'readiness not available', ready?.status === 'ready' || ready?.status === 'ok' ? 'ok' : 'danger'),
      card('PostgreSQL', check(ready?.postgres), ms(ready?.postgres), ready?.postgres?.ok ? 'ok' : 'danger'),
      card('NATS', check(ready?.nats), ms(ready?.nats), ready?.nats?.ok ? 'ok' : 'danger'),
      card('Relay', relay ? (lagEvents(lagOf(relay)) === 0 ? 'caught up' : `${number(lagEvents(lagOf(relay)))} behind`) : '—',
        relay ? h('span', {}, `${stateOf(relay)}, ${Number(relay.lag_seconds ?? 0).toFixed(1)} s; at `, h('code', {}, relay.position ?? '—')) : 'no relay checkpoint',
        relay && relay.ok !== false && lagEvents(lagOf(relay)) === 0 ? 'ok' : 'warn'),
      head !== undefined ? card('Log head', h('code', { class: 'stat-code' }, head ?? 'empty'), 'the last event readers can see') : null);
  }

  function renderTable(projections) {
    if (!projections.length) {
      fill(table, h('p', { class: 'empty' }, 'No read models.'));
      return;
    }
    fill(table, h('table', { class: 'table projections-table' },
      h('thead', {}, h('tr', {}, ['Read model', 'State', 'Position', 'Lag', 'Events applied', 'Last error', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, projections.map((p) => h('tr', { dataset: { projection: p.name } },
        h('td', {}, h('strong', {}, p.name)),
        h('td', {}, badge(stateOf(p), p.ok === false && stateOf(p) === 'running' ? 'warn' : STATE_KIND[stateOf(p)] ?? '')),
        h('td', {}, h('code', {}, p.position ?? '—')),
        h('td', { class: `nowrap ${lagEvents(lagOf(p)) > 0 ? 'warn-text' : ''}` }, lagText(lagOf(p))),
        h('td', { class: 'num' }, number(p.events_applied)),
        h('td', { class: 'error-text wrap' }, p.last_error ? [p.last_error, p.failed_event_id ? h('div', { class: 'muted small' }, 'event ', h('code', {}, p.failed_event_id)) : null] : ''),
        h('td', {}, h('button', {
          type: 'button', class: 'small', disabled: rebuilding.has(p.name),
          dataset: { action: 'rebuild' },
          onclick: () => rebuild(p.name),
        }, rebuilding.has(p.name) ? 'Rebuilding…' : 'Rebuild')))))));
  }

  async function rebuild(name) {
    const ok = await confirmDialog({
      title: `Rebuild ${name}?`,
      message: 'The read model is replayed from the whole log. Readers keep seeing the old rows until it is done; while it runs, the relay waits.',
      okLabel: 'Rebuild', danger: true,
    });
    if (!ok) return;
    rebuilding.add(name);
    load();
    try {
      await api('POST', `/api/v1/admin/projections/${encodeURIComponent(name)}/rebuild`, { signal: controller.signal });
      toast(`Rebuild of ${name} started`, 'ok');
    } catch (err) {
      if (err.name !== 'AbortError' && err.status !== 401) toast(errorText(err), 'error');
    } finally {
      rebuilding.delete(name);
      if (!stopped) load();
    }
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}

/** GET /health/ready (public; 503 with the same body when not ready). */
async function readiness(signal) {
  try {
    const res = await fetch('/health/ready', { credentials: 'omit', cache: 'no-store', signal, headers: { accept: 'application/json' } });
    const body = await res.json();
    return body?.data ?? body;
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    return null;
  }
}

// Event log: the log in its order (oldest first), from GET /api/v1/admin/events, filtered
// by type, aggregate, actor, time and page size, a page at a time with the `next` cursor
// (in memory: Previous and First go back). Each row opens to its payload and metadata.
// "Download NDJSON" streams every event matching the filters (no page, no limit) with
// `Accept: application/x-ndjson` and saves it as a file (a Blob and an <a download>).
// The filters and the page's cursor live in the hash (#/events?type=...&after=...).

import { api } from '../api.js';
import { errorBox, fill, h, number, time, toast } from '../dom.js';
import { makeHash, replaceHash } from '../router.js';
import { eventTone } from './user.js';

/** What an event can belong to (`aggregate_type`). */
export const AGGREGATE_TYPES = ['user', 'session', 'meter', 'conversation', 'upload', 'api_key'];

/** Every event type of the catalog (docs/EVENT-CATALOG.md), for the type field's suggestions. */
export const EVENT_TYPES = [
  'UserRegistered', 'DuplicateRegistrationAttempted', 'EmailVerificationRequested',
  'EmailVerificationCodeRejected', 'EmailVerified', 'EmailChanged', 'LoginFailed',
  'FailedLoginsCleared', 'PasswordResetRequested', 'PasswordResetCodeRejected', 'PasswordReset',
  'PasswordChanged', 'ProfileUpdated', 'AvatarChanged', 'PlanChanged', 'RoleChanged',
  'UserDeactivated', 'UserReactivated', 'UserErased',
  'SessionStarted', 'RefreshTokenRotated', 'RefreshTokenReuseDetected', 'SessionRevoked',
  'UsageRecorded', 'ConversationStarted', 'ConversationRenamed', 'ConversationDeleted',
  'MessagePosted', 'MessageEdited', 'MessageDeleted', 'AssistantFailed',
  'UploadStored', 'UploadDeleted', 'ApiKeyCreated', 'ApiKeyRevoked',
];

export const DEFAULT_LIMIT = 50;
const FILTERS = ['type', 'aggregate_type', 'aggregate_id', 'actor', 'since', 'until', 'personal'];

/** The filters, page size and cursor of a hash's params, cleaned up. */
export function filtersFrom(params) {
  const get = (name) => (params.get(name) ?? '').trim();
  const limit = Number(get('limit'));
  const personal = get('personal');
  return {
    type: get('type').replace(/\s+/g, ''),
    aggregate_type: get('aggregate_type'),
    aggregate_id: get('aggregate_id'),
    actor: get('actor'),
    since: isoOrEmpty(get('since')),
    until: isoOrEmpty(get('until')),
    personal: personal === 'sealed' ? 'sealed' : '',
    limit: Number.isInteger(limit) && limit >= 1 && limit <= 1000 ? limit : DEFAULT_LIMIT,
    after: get('after'),
  };
}

/**
 * The query of GET /admin/events for these filters: a JSON page (with `after` and
 * `limit`), or, with `stream`, every matching event (neither: the whole filtered log).
 */
export function eventsQuery(f, { stream = false } = {}) {
  const query = {};
  for (const name of FILTERS) if (f[name]) query[name] = f[name];
  if (!stream) {
    if (f.after) query.after = f.after;
    query.limit = f.limit ?? DEFAULT_LIMIT;
  }
  return query;
}

/** The hash of these filters (defaults left out). */
export function eventsHash(f) {
  return makeHash('events', {
    ...eventsQuery(f, { stream: true }),
    limit: f.limit && f.limit !== DEFAULT_LIMIT ? f.limit : '',
    after: f.after,
  });
}

function isoOrEmpty(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

const pad = (n) => String(n).padStart(2, '0');

/** An <input type="datetime-local"> value (the browser's time zone) as RFC 3339 UTC, or ''. */
export function isoFromLocalInput(value) {
  if (!value) return '';
  const d = new Date(value); // no offset: local time, as the input shows it
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** RFC 3339 as an <input type="datetime-local"> value in the browser's time zone, or ''. */
export function localInputFromIso(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The file name of a download: chronicle-events-20260301-142233Z[-UserRegistered].ndjson */
export function downloadName(f, now = new Date()) {
  const stamp = now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/[-:]/g, '').replace('T', '-');
  const types = (f.type ?? '').split(',').filter(Boolean);
  const what = types.length === 1 ? `-${types[0].replace(/[^A-Za-z0-9_]/g, '')}` : '';
  return `chronicle-events-${stamp}${what}.ndjson`;
}

/** Newlines in a chunk of bytes (one per NDJSON line). */
export function countNewlines(bytes) {
  let n = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) n++;
  return n;
}

/** "1.2 MB" */
export function byteSize(n) {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB'];
  let v = n;
  let unit = '';
  for (const u of units) {
    v /= 1000;
    unit = u;
    if (v < 1000) break;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${unit}`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

/** A UUID's first 8 digits (the rest in the tooltip); other ids as they are. */
function shortId(id) {
  const s = String(id ?? '');
  return UUID.test(s) ? `${s.slice(0, 8)}…${s.slice(36)}` : s;
}

/** A cursor with its leading zeros dimmed: still the whole value, easy to read. */
function cursorCode(cursor) {
  const parts = String(cursor ?? '').split('-');
  const code = h('code', { class: 'cursor', title: cursor ?? '' });
  parts.forEach((part, i) => {
    if (i) code.append('-');
    const digits = part.replace(/^0+(?=.)/, '');
    const zeros = part.slice(0, part.length - digits.length);
    if (zeros) code.append(h('span', { class: 'zeros' }, zeros));
    code.append(digits);
  });
  return code;
}

function aggregateCell(e) {
  const id = e.aggregate_id ?? '';
  const label = h('code', {}, shortId(id));
  const userId = e.aggregate_type === 'user' ? id : null;
  return h('span', { class: 'aggregate' },
    h('span', { class: 'agg-type' }, e.aggregate_type ?? '?'),
    userId ? h('a', { href: `#/users/${encodeURIComponent(userId)}`, title: id }, label) : h('span', { title: id }, label),
    h('span', { class: 'muted seq', title: 'sequence in the aggregate' }, ` #${e.sequence ?? '?'}`));
}

function actorCell(m = {}) {
  const role = m.actor_role || 'unknown';
  const id = m.actor_id ?? '';
  let who = null;
  if (id) {
    const label = h('code', {}, shortId(id));
    who = (role === 'user' || role === 'admin') && UUID.test(id)
      ? h('a', { href: `#/users/${encodeURIComponent(id)}`, title: id }, label)
      : h('span', { title: id }, label);
  }
  return h('span', { class: 'actor' }, h('span', { class: `badge role-${role}` }, role), who ? ' ' : null, who);
}

function json(value) {
  return h('pre', { class: 'payload' }, JSON.stringify(value ?? null, null, 2));
}

function eventRows(e) {
  const fact = (label, value) => (value === undefined || value === null || value === '' ? null : [h('dt', {}, label), h('dd', {}, h('code', {}, String(value)))]);
  const detail = h('tr', { class: 'event-detail', hidden: true },
    h('td', { colspan: 7 },
      h('div', { class: 'event-detail-body' },
        h('dl', { class: 'facts compact' },
          fact('Event id', e.event_id),
          fact('Cursor', e.cursor),
          fact('Transaction, position', `${e.transaction_id} / ${e.position}`),
          fact('Aggregate', `${e.aggregate_type} ${e.aggregate_id} (sequence ${e.sequence})`),
          fact('Recorded', e.recorded_at),
          fact('Request id', e.metadata?.request_id),
          fact('IP', e.metadata?.ip),
          fact('User agent', e.metadata?.user_agent)),
        h('div', { class: 'json-pair' },
          h('div', {}, h('h3', {}, 'Payload'), json(e.payload)),
          h('div', {}, h('h3', {}, 'Metadata'), json(e.metadata))))));
  const toggle = h('button', { type: 'button', class: 'small toggle', 'aria-expanded': 'false', 'aria-label': `Show the payload and metadata of ${e.event_type}` }, '▸');
  const flip = () => {
    detail.hidden = !detail.hidden;
    toggle.setAttribute('aria-expanded', String(!detail.hidden));
    toggle.textContent = detail.hidden ? '▸' : '▾';
    row.classList.toggle('open', !detail.hidden);
  };
  toggle.addEventListener('click', flip);
  const row = h('tr', {
    class: `event-row clickable tone-${eventTone(e.event_type) || 'none'}`,
    dataset: { eventType: e.event_type ?? '', eventId: e.event_id ?? '', cursor: e.cursor ?? '', aggregateType: e.aggregate_type ?? '', aggregateId: e.aggregate_id ?? '' },
  },
  h('td', { class: 'toggle-cell' }, toggle),
  h('td', { class: 'nowrap' }, time(e.recorded_at)),
  h('td', { class: 'nowrap' }, cursorCode(e.cursor)),
  h('td', { class: 'nowrap' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('code', { class: 'etype' }, e.event_type ?? '?')),
  h('td', { class: 'nowrap' }, aggregateCell(e)),
  h('td', { class: 'nowrap' }, actorCell(e.metadata)),
  h('td', { class: 'num' }, e.event_version ?? ''));
  row.addEventListener('click', (ev) => {
    if (ev.target.closest('a, button') || getSelection()?.toString()) return;
    flip();
  });
  return [row, detail];
}

export function render(main, { params }) {
  const controller = new AbortController();
  const signal = controller.signal;
  let f = filtersFrom(params);
  let offset = f.after ? null : 0; // how many events come before this page (unknown after a deep link)
  let trail = []; // the pages before this one: { after, offset }
  let page = null; // the current page's answer
  let generation = 0;
  const urls = [];

  // --- the filters ---------------------------------------------------------------------

  const field = (label, control, cls = '') => h('label', { class: `field ${cls}`.trim() }, label, control, h('span', { class: 'field-error', hidden: true }));
  const text = (name, placeholder, extra = {}) => h('input', { type: 'text', name, value: f[name] ?? '', placeholder, autocomplete: 'off', spellcheck: 'false', ...extra });
  const stamp = (name) => h('input', { type: 'datetime-local', name, step: '1', value: localInputFromIso(f[name]) });
  const form = h('form', { class: 'event-filters', id: 'event-filters', novalidate: true },
    field('Event types', text('type', 'All (or e.g. UserRegistered,SessionStarted)', { list: 'event-types-log' }), 'wide'),
    h('datalist', { id: 'event-types-log' }, EVENT_TYPES.map((t) => h('option', { value: t }))),
    field('Aggregate', h('select', { name: 'aggregate_type' },
      h('option', { value: '' }, 'Any'),
      AGGREGATE_TYPES.map((t) => h('option', { value: t, selected: f.aggregate_type === t }, t)))),
    field('Aggregate id', text('aggregate_id', 'a UUID')),
    field('Actor id', text('actor', 'user id, key id, worker')),
    field('Since (local time)', stamp('since')),
    field('Until (local time)', stamp('until')),
    field('Personal data', h('select', { name: 'personal' },
      h('option', { value: '', selected: f.personal !== 'sealed' }, 'opened'),
      h('option', { value: 'sealed', selected: f.personal === 'sealed' }, 'sealed (as stored)'))),
    field('After cursor', text('after', 'the start of the log', { class: 'mono' }), 'wide'),
    field('Per page', h('input', { type: 'number', name: 'limit', min: '1', max: '1000', step: '1', value: String(f.limit) })),
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary', id: 'events-apply' }, 'Apply'),
      h('button', { type: 'button', id: 'events-reset', onclick: () => {
        for (const el of form.elements) if (el.name && el.tagName !== 'BUTTON') el.value = el.name === 'limit' ? String(DEFAULT_LIMIT) : '';
        apply();
      } }, 'Reset')));
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  for (const sel of form.querySelectorAll('select')) sel.addEventListener('change', () => apply());

  function apply() {
    const v = (name) => form.elements[name].value.trim();
    const limit = Number(v('limit'));
    f = {
      type: v('type').replace(/\s+/g, ''),
      aggregate_type: v('aggregate_type'),
      aggregate_id: v('aggregate_id'),
      actor: v('actor'),
      since: isoFromLocalInput(v('since')),
      until: isoFromLocalInput(v('until')),
      personal: v('personal'),
      limit: Number.isInteger(limit) && limit >= 1 && limit <= 1000 ? limit : DEFAULT_LIMIT,
      after: v('after'),
    };
    form.elements.limit.value = String(f.limit);
    offset = f.after ? null : 0;
    trail = [];
    load();
  }

  // --- the page ------------------------------------------------------------------------

  const results = h('div', { class: 'results', 'aria-live': 'polite', id: 'events-results' });
  const downloadButton = h('button', { type: 'button', id: 'events-download', title: 'Every event matching the filters (all pages), one JSON object a line', onclick: download }, 'Download NDJSON');
  const downloadStatus = h('span', { class: 'muted small', id: 'download-status' });
  main.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Event log'),
      h('span', { class: 'muted' }, 'oldest first'),
      h('span', { class: 'spacer' }),
      downloadStatus,
      downloadButton),
    h('div', { class: 'card' }, form, results));

  function showFieldErrors(fields) {
    for (const slot of form.querySelectorAll('.field-error')) { slot.hidden = true; slot.textContent = ''; }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    for (const [name, message] of Object.entries(fields ?? {})) {
      const input = form.elements[name];
      if (!input || !input.closest) continue;
      input.setAttribute('aria-invalid', 'true');
      const slot = input.closest('label')?.querySelector('.field-error');
      if (slot) { slot.textContent = message; slot.hidden = false; }
    }
  }

  async function load() {
    const mine = ++generation;
    const hash = eventsHash(f);
    replaceHash(hash);
    form.elements.after.value = f.after;
    results.classList.add('loading');
    results.setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', '/api/v1/admin/events', { query: eventsQuery(f), signal });
      if (mine !== generation) return;
      showFieldErrors(null);
      page = { items: data.items ?? [], next: data.next ?? null, has_more: Boolean(data.has_more) };
      fill(results, table(page.items), pagerRow());
    } catch (err) {
      if (mine !== generation || err.name === 'AbortError') return;
      showFieldErrors(err.fields);
      page = null;
      fill(results, errorBox(err), pagerRow());
    } finally {
      if (mine === generation) {
        results.classList.remove('loading');
        results.setAttribute('aria-busy', 'false');
        results.dataset.shown = hash; // which page is on screen (the filters and cursor)
      }
    }
  }

  function table(items) {
    if (!items.length) {
      return h('p', { class: 'empty', id: 'events-empty' }, offset ? 'No more events match after this point.' : 'No events match.');
    }
    return h('div', { class: 'table-wrap' }, h('table', { class: 'table events-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', class: 'toggle-cell' }, h('span', { class: 'visually-hidden' }, 'Details')),
        ['Time', 'Cursor', 'Event', 'Aggregate', 'Actor', 'Version'].map((t) => h('th', { scope: 'col', class: t === 'Version' ? 'num' : null }, t)))),
      h('tbody', {}, items.flatMap(eventRows))));
  }

  function pagerRow() {
    const n = page?.items.length ?? 0;
    let range;
    if (!page) range = '';
    else if (n === 0) range = '';
    else if (offset !== null) range = `Events ${number(offset + 1)}–${number(offset + n)}`;
    else range = `${number(n)} event${n === 1 ? '' : 's'} after ${f.after}`;
    const end = page && !page.has_more ? ' · the end of the log' : page?.has_more ? ' · more after these' : '';
    const canNext = Boolean(page?.has_more && page.next && page.next !== f.after);
    return h('div', { class: 'pager' },
      h('span', { class: 'muted', id: 'events-range', dataset: { testid: 'events-range', count: String(n), hasMore: String(Boolean(page?.has_more)) } }, range + (n ? end : '')),
      h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'small', id: 'events-first', disabled: !f.after, onclick: first }, '« First'),
      h('button', { type: 'button', class: 'small', id: 'events-prev', disabled: trail.length === 0, onclick: previous }, '‹ Previous'),
      h('button', { type: 'button', class: 'small', id: 'events-next', disabled: !canNext, onclick: next }, 'Next page ›'));
  }

  function next() {
    if (!page?.next) return;
    trail.push({ after: f.after, offset });
    offset = offset === null ? null : offset + page.items.length;
    f = { ...f, after: page.next };
    load();
  }

  function previous() {
    const back = trail.pop();
    if (!back) return;
    f = { ...f, after: back.after };
    offset = back.offset;
    load();
  }

  function first() {
    trail = [];
    offset = 0;
    f = { ...f, after: '' };
    load();
  }

  // --- the download --------------------------------------------------------------------

  async function download() {
    const filters = f;
    downloadButton.disabled = true;
    downloadButton.textContent = 'Downloading…';
    downloadStatus.textContent = '';
    delete downloadStatus.dataset.count;
    try {
      const res = await api('GET', '/api/v1/admin/events', {
        query: eventsQuery(filters, { stream: true }), headers: { accept: 'application/x-ndjson' }, raw: true, signal,
      });
      const chunks = [];
      let lines = 0;
      let bytes = 0;
      let last = 10;
      if (res.body) {
        const reader = res.body.getReader();
        for (;;) {
          const { done, value } = await reader.read().catch((e) => {
            if (e.name === 'AbortError') throw e;
            throw new Error(`the export broke off after ${number(lines)} events (${e.message || e})`);
          });
          if (done) break;
          chunks.push(value);
          lines += countNewlines(value);
          bytes += value.length;
          if (value.length) last = value[value.length - 1];
          downloadButton.textContent = `Downloading… ${number(lines)}`;
        }
      }
      if (last !== 10) throw new Error('the export ended in the middle of a line');
      const name = downloadName(filters);
      const href = URL.createObjectURL(new Blob(chunks, { type: 'application/x-ndjson' }));
      urls.push(href);
      const a = h('a', { href, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      downloadStatus.dataset.count = String(lines);
      downloadStatus.textContent = `Saved ${number(lines)} event${lines === 1 ? '' : 's'} (${byteSize(bytes)}) as ${name}`;
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401 || err.status === 403) return;
      const why = err.kind === 'network'
        ? `the export did not arrive whole, or the server cannot be reached (${err.message.replace(/^The server cannot be reached \((.*)\)$/, '$1')})`
        : err.message || String(err);
      toast(`The download failed: ${why}`, 'error');
    } finally {
      downloadButton.disabled = false;
      downloadButton.textContent = 'Download NDJSON';
    }
  }

  load();
  return () => {
    controller.abort();
    for (const href of urls) URL.revokeObjectURL(href);
  };
}

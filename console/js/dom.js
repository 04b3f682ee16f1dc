// Small DOM helpers. Everything the console shows is built with text nodes (never
// innerHTML), so names, emails and payloads from users cannot inject markup.

/**
 * h('a', {href: '#/x', class: 'link', onclick: fn}, 'text', otherNode)
 * Attributes: `class`, `dataset` (object), `on<event>` (listener), `hidden`, `disabled`,
 * `checked`, `value`, `selected` (properties), anything else as an attribute (null and
 * false leave it out). Children: nodes, strings, numbers, arrays, null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (['hidden', 'disabled', 'checked', 'value', 'selected', 'open'].includes(key)) {
      el[key] = value;
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace a node's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const pad = (n) => String(n).padStart(2, '0');

/** '2026-11-22 04:29:35' in the browser's time zone. */
export function localDateTime(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A timestamp as local date and time, the exact UTC value and how long ago in its tooltip. */
export function time(iso, empty = '—') {
  if (!iso) return h('span', { class: 'muted' }, empty);
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', {}, String(iso));
  return h('time', { datetime: iso, title: `${d.toISOString()} (${ago(d)})` }, localDateTime(d));
}

/** "3 minutes ago", "in 2 days". */
export function ago(date) {
  const seconds = Math.round((new Date(date).getTime() - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const units = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return rtf.format(Math.round(seconds / size), unit);
  }
  return rtf.format(seconds, 'second');
}

export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}`.trim() }, text);
}

const STATUS_KIND = { active: 'ok', pending_verification: 'warn', disabled: 'danger', erased: 'dark' };
export function statusBadge(status) {
  return badge(String(status ?? '?').replaceAll('_', ' '), STATUS_KIND[status] ?? '');
}

export function roleBadge(role) {
  return badge(role ?? '?', role === 'admin' ? 'accent' : '');
}

export function number(n) {
  return typeof n === 'number' ? n.toLocaleString() : (n ?? '—');
}

/** A message that fades away; errors stay until clicked. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  el.addEventListener('click', () => el.remove());
  box.append(el);
  if (kind !== 'error') setTimeout(() => el.remove(), 4000);
  else setTimeout(() => el.remove(), 15000);
}

/** A page-level error block (e.g. a list that failed to load). */
export function errorBox(err) {
  return h('div', { class: 'error-box', role: 'alert' }, errorText(err));
}

/** What to show for an error from the API (the envelope's message and fields). */
export function errorText(err) {
  if (!err) return 'Something went wrong';
  let text = err.message || String(err);
  if (err.fields && typeof err.fields === 'object') {
    const parts = Object.entries(err.fields)
      .map(([field, msg]) => `${field}: ${msg}`)
      .filter((p) => !text.includes(p));
    if (parts.length) text += ` (${parts.join('; ')})`;
  }
  return text;
}

/**
 * A confirmation dialog. Resolves to an object of the inputs' values when confirmed, or
 * null when cancelled. `requireText`: the confirm button stays disabled until the input
 * named `confirm_text` holds exactly this text (typed confirmation of erasures).
 */
export function confirmDialog({ title, message, inputs = [], okLabel = 'Confirm', danger = false, requireText = null }) {
  const dialog = document.getElementById('confirm-dialog');
  const form = document.getElementById('confirm-form');
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = title;
  const body = document.getElementById('confirm-body');
  const fields = inputs.map((input) =>
    h('label', {}, input.label,
      h('input', { name: input.name, type: 'text', placeholder: input.placeholder ?? '', autocomplete: 'off', spellcheck: 'false' })));
  fill(body, message ? h('p', {}, message) : null, fields);
  ok.textContent = okLabel;
  ok.className = danger ? 'danger' : 'primary';
  const check = () => {
    if (requireText === null) { ok.disabled = false; return; }
    ok.disabled = form.elements.confirm_text?.value.trim() !== requireText;
  };
  check();
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      form.removeEventListener('input', check);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      if (ok.disabled) return;
      const values = {};
      for (const input of inputs) values[input.name] = form.elements[input.name].value.trim();
      done(values);
    };
    const onCancel = (e) => { e.preventDefault(); done(null); };
    form.addEventListener('submit', onSubmit);
    form.addEventListener('input', check);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    (form.querySelector('input') ?? cancel).focus();
  });
}

/** Wait `ms` after the last call before running `fn`. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Pagination controls: "1–25 of 130" with previous and next. */
export function pager({ page, perPage, total, onPage, label = 'items' }) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  const first = total === 0 ? 0 : (page - 1) * perPage + 1;
  const last = Math.min(total, page * perPage);
  return h('div', { class: 'pager' },
    h('span', { class: 'muted', dataset: { testid: 'pager-total' } },
      total === 0 ? `No ${label}` : `${number(first)}–${number(last)} of ${number(total)} ${label}`),
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'small', disabled: page <= 1, onclick: () => onPage(page - 1) }, '‹ Previous'),
    h('span', { class: 'muted' }, `Page ${page} of ${pages}`),
    h('button', { type: 'button', class: 'small', disabled: page >= pages, onclick: () => onPage(page + 1) }, 'Next ›'));
}

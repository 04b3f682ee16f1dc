// Users: search (email or name), filters by status, role and plan, sort, pages.
// The filters live in the hash (#/users?q=ada&status=active&page=2), so a link or the
// back button brings the same list back. "New user" opens the creation dialog.

import { api, getPlans } from '../api.js';
import { debounce, errorBox, fill, h, pager, roleBadge, statusBadge, time, toast } from '../dom.js';
import { makeHash, readAfterNextRoute, replaceHash } from '../router.js';
import { createUserDialog } from './create-user.js';

const STATUSES = ['pending_verification', 'active', 'disabled', 'erased'];
const ROLES = ['user', 'admin'];
const SORTS = [
  ['-created', 'Newest first'],
  ['created', 'Oldest first'],
  ['-last_login', 'Recently signed in'],
  ['last_login', 'Least recently signed in'],
  ['email', 'Email A–Z'],
  ['-email', 'Email Z–A'],
];
const PER_PAGE = [25, 50, 100];

export function render(main, { params }) {
  const state = {
    q: params.get('q') ?? '',
    status: params.get('status') ?? '',
    role: params.get('role') ?? '',
    plan: params.get('plan') ?? '',
    sort: params.get('sort') ?? '-created',
    page: Math.max(1, Number(params.get('page')) || 1),
    per_page: PER_PAGE.includes(Number(params.get('per_page'))) ? Number(params.get('per_page')) : 25,
  };
  const controller = new AbortController();
  let generation = 0;

  const select = (name, label, options) =>
    h('label', { class: 'field' }, label,
      h('select', { name, onchange: (e) => { state[name] = e.target.value; state.page = 1; load(); } },
        options.map(([value, text]) => h('option', { value, selected: state[name] === value }, text))));

  const search = h('input', {
    type: 'search', name: 'q', value: state.q, placeholder: 'Email or name', autocomplete: 'off',
    spellcheck: 'false', 'aria-label': 'Search users',
  });
  const runSearch = debounce(() => { state.q = search.value.trim(); state.page = 1; load(); }, 250);
  search.addEventListener('input', runSearch);
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { state.q = search.value.trim(); state.page = 1; load(); } });

  const planSelect = select('plan', 'Plan', [['', 'Any plan']]);
  const filters = h('div', { class: 'toolbar filters' },
    h('label', { class: 'field grow' }, 'Search', search),
    select('status', 'Status', [['', 'Any status'], ...STATUSES.map((s) => [s, s.replaceAll('_', ' ')])]),
    select('role', 'Role', [['', 'Any role'], ...ROLES.map((r) => [r, r])]),
    planSelect,
    select('sort', 'Sort', SORTS),
    h('label', { class: 'field' }, 'Per page',
      h('select', { name: 'per_page', onchange: (e) => { state.per_page = Number(e.target.value); state.page = 1; load(); } },
        PER_PAGE.map((n) => h('option', { value: String(n), selected: state.per_page === n }, String(n))))));

  const results = h('div', { class: 'results', 'aria-live': 'polite' });
  const newUser = async () => {
    const created = await createUserDialog({ signal: controller.signal });
    if (!created) return;
    const user = created.user;
    if (!user?.id) { toast('User created; the list shows them once it has caught up', 'ok'); load(); return; }
    toast(`Created ${user.email}`, 'ok');
    readAfterNextRoute(created.position);
    location.hash = `#/users/${encodeURIComponent(user.id)}`;
  };
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Users'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', id: 'new-user', onclick: newUser }, '+ New user')),
    h('div', { class: 'card' }, filters, results));

  getPlans().then((plans) => {
    const sel = planSelect.querySelector('select');
    for (const p of plans) sel.append(h('option', { value: p.name, selected: state.plan === p.name }, p.name));
    if (state.plan && !plans.some((p) => p.name === state.plan)) sel.append(h('option', { value: state.plan, selected: true }, state.plan));
  }).catch(() => {});

  async function load() {
    // a search still waiting out its debounce when the page was left must not touch the
    // next page's URL
    if (controller.signal.aborted) return;
    const mine = ++generation;
    const { q, status, role, plan, sort, page, per_page } = state;
    replaceHash(makeHash('users', { q, status, role, plan, sort: sort === '-created' ? '' : sort, page: page > 1 ? page : '', per_page: per_page === 25 ? '' : per_page }));
    results.classList.add('loading');
    try {
      const data = await api('GET', '/api/v1/admin/users', { query: { page, per_page, q, status, role, plan, sort }, signal: controller.signal });
      if (mine !== generation) return;
      fill(results, table(data.items ?? []), pager({
        page: data.page ?? page, perPage: data.per_page ?? per_page, total: data.total ?? 0, label: 'users',
        onPage: (p) => { state.page = p; load(); },
      }));
    } catch (err) {
      if (mine !== generation || err.name === 'AbortError') return;
      fill(results, errorBox(err));
    } finally {
      if (mine === generation) results.classList.remove('loading');
    }
  }

  load();
  search.focus();
  return () => controller.abort();
}

function table(items) {
  if (!items.length) return h('p', { class: 'empty' }, 'No users match.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table users-table' },
    h('thead', {}, h('tr', {},
      ['Email', 'Name', 'Role', 'Plan', 'Status', 'Created', 'Last sign-in'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, items.map((u) => {
      const href = `#/users/${encodeURIComponent(u.id)}`;
      const row = h('tr', { class: 'clickable', dataset: { userId: u.id, email: u.email ?? '' } },
        h('td', {}, h('a', { href, class: 'user-link' }, u.email ?? '[erased]'),
          u.email_verified === false && u.status !== 'pending_verification' ? h('span', { class: 'muted small', title: 'The current email is not verified yet' }, ' (unverified)') : null),
        h('td', {}, u.display_name || h('span', { class: 'muted' }, '—')),
        h('td', {}, roleBadge(u.role)),
        h('td', {}, u.plan ?? '—'),
        h('td', {}, statusBadge(u.status)),
        h('td', {}, time(u.created_at)),
        h('td', {}, time(u.last_login_at, 'never')));
      row.addEventListener('click', (e) => {
        if (e.target.closest('a')) return;
        location.hash = href;
      });
      return row;
    }))));
}

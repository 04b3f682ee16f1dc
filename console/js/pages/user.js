// One user: profile, sessions, actions (each confirmed first) and their history as a
// timeline (who did what, when, from where; the payload on demand).

import { api, currentUser, getPlans } from '../api.js';
import { badge, confirmDialog, errorBox, errorText, fill, h, pager, roleBadge, statusBadge, time, toast } from '../dom.js';
import { makeHash, replaceHash, takePendingPosition } from '../router.js';

export const KNOWN_TYPES = [
  'UserRegistered', 'DuplicateRegistrationAttempted', 'EmailVerificationRequested',
  'EmailVerificationCodeRejected', 'EmailVerified', 'FailedLoginsCleared', 'LoginFailed',
  'PasswordResetRequested', 'PasswordResetCodeRejected', 'PasswordReset', 'PasswordChanged',
  'ProfileUpdated', 'AvatarChanged', 'PlanChanged', 'UserErased', 'RoleChanged',
  'UserDeactivated', 'UserReactivated', 'EmailChanged', 'SessionStarted', 'RefreshTokenRotated',
  'RefreshTokenReuseDetected', 'SessionRevoked', 'UsageRecorded', 'ConversationStarted',
  'MessagePosted', 'UploadStored',
];

/** A colour per kind of event, for the timeline's dots. */
export function eventTone(type = '') {
  if (/Failed|Rejected|ReuseDetected|Duplicate/.test(type)) return 'danger';
  if (/Deactivated|Erased|Revoked|RoleChanged|PlanChanged|Reset$/.test(type)) return 'warn';
  if (/Registered|Verified|Reactivated/.test(type)) return 'ok';
  if (/^Session|Login|Refresh/.test(type)) return 'info';
  return '';
}

export function render(main, { path, params }) {
  const id = path[1];
  const controller = new AbortController();
  const signal = controller.signal;
  const me = currentUser();
  let user = null;

  const profile = h('section', { class: 'card profile', 'aria-label': 'Profile' }, h('p', { class: 'muted' }, 'Loading…'));
  const sessions = h('section', { class: 'card', 'aria-label': 'Sessions' });
  const timeline = h('section', { class: 'card', 'aria-label': 'History' });
  main.append(
    h('div', { class: 'page-head' },
      h('a', { href: '#/users', class: 'back' }, '‹ Users'),
      h('h1', { id: 'user-title', dataset: { testid: 'profile-email' } }, 'User'),
      h('span', { id: 'user-subtitle', class: 'muted' }),
      h('span', { class: 'spacer' }),
      h('a', { href: makeHash('events', { aggregate_type: 'user', aggregate_id: id }), class: 'small', id: 'user-in-log', title: 'The events of this user aggregate, in the whole log' }, 'In the event log ›')),
    profile, sessions, timeline);

  // --- profile, actions and sessions ---------------------------------------------------

  async function loadUser(minPosition) {
    try {
      const data = await api('GET', `/api/v1/admin/users/${encodeURIComponent(id)}`, { signal, minPosition });
      user = data.user ?? data;
      renderProfile(user);
      renderSessions(data.sessions ?? []);
    } catch (err) {
      if (err.name === 'AbortError') return;
      fill(profile, errorBox(err));
      fill(sessions);
    }
  }

  function renderProfile(u) {
    const erased = u.status === 'erased';
    document.getElementById('user-title').textContent = u.email || '[erased]';
    document.getElementById('user-subtitle').textContent = u.display_name ?? '';
    const fact = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
    fill(profile,
      h('div', { class: 'badges' },
        statusBadge(u.status), roleBadge(u.role), badge(`plan: ${u.plan ?? '—'}`),
        u.email_verified ? badge('email verified', 'ok') : badge('email not verified', 'warn'),
        me && me.id === u.id ? badge('you', 'accent') : null),
      h('dl', { class: 'facts' },
        fact('Name', u.display_name || h('span', { class: 'muted' }, '—')),
        fact('Created', time(u.created_at)),
        fact('Last sign-in', time(u.last_login_at, 'never')),
        fact('Updated', time(u.updated_at)),
        fact('User id', h('code', {}, u.id))),
      erased ? h('p', { class: 'muted' }, 'This account is erased: its personal data can no longer be read. Its history stays in the log.') : actions(u));
  }

  function actions(u) {
    const active = u.status !== 'disabled';
    const roleSelect = h('select', { name: 'role', 'aria-label': 'Role' },
      ['user', 'admin'].map((r) => h('option', { value: r, selected: u.role === r }, r)));
    const planSelect = h('select', { name: 'plan', 'aria-label': 'Plan' },
      h('option', { value: u.plan ?? '', selected: true }, u.plan ?? '—'));
    getPlans().then((plans) => {
      fill(planSelect, plans.map((p) => h('option', { value: p.name, selected: p.name === u.plan }, p.name)));
      if (!plans.some((p) => p.name === u.plan)) planSelect.append(h('option', { value: u.plan, selected: true }, u.plan));
    }).catch(() => {});
    const self = me && me.id === u.id ? ' This is your own account.' : '';
    return h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' },
      active
        ? h('button', { type: 'button', class: 'warn', dataset: { action: 'deactivate' }, onclick: () => act({
          title: `Deactivate ${u.email}?`,
          message: `They cannot sign in until reactivated, and every session of theirs ends now.${self}`,
          inputs: [{ name: 'reason', label: 'Reason (optional, kept in the log)', placeholder: 'e.g. abuse report #123' }],
          okLabel: 'Deactivate', danger: true, done: 'User deactivated',
          run: (v) => api('POST', `/api/v1/admin/users/${id}/deactivate`, { body: v.reason ? { reason: v.reason } : {} }),
        }) }, 'Deactivate')
        : h('button', { type: 'button', dataset: { action: 'reactivate' }, onclick: () => act({
          title: `Reactivate ${u.email}?`, message: 'They can sign in again.', okLabel: 'Reactivate', done: 'User reactivated',
          run: () => api('POST', `/api/v1/admin/users/${id}/reactivate`, { body: {} }),
        }) }, 'Reactivate'),
      h('span', { class: 'inline-action' }, roleSelect,
        h('button', { type: 'button', dataset: { action: 'role' }, onclick: () => {
          const role = roleSelect.value;
          if (role === u.role) { toast(`${u.email} already has the role ${role}`); return; }
          act({
            title: `Make ${u.email} ${role === 'admin' ? 'an admin' : 'a user'}?`,
            message: role === 'admin' ? 'Admins can use this console and every admin API.' : `They lose access to this console and the admin API.${self}`,
            okLabel: 'Change role', danger: role === 'admin', done: `Role changed to ${role}`,
            run: () => api('PUT', `/api/v1/admin/users/${id}/role`, { body: { role } }),
          });
        } }, 'Change role')),
      h('span', { class: 'inline-action' }, planSelect,
        h('button', { type: 'button', dataset: { action: 'plan' }, onclick: () => {
          const plan = planSelect.value;
          if (plan === u.plan) { toast(`${u.email} is already on ${plan}`); return; }
          act({
            title: `Move ${u.email} to the ${plan} plan?`, message: 'Their daily limits change at once.',
            okLabel: 'Change plan', done: `Plan changed to ${plan}`,
            run: () => api('PATCH', `/api/v1/admin/users/${id}`, { body: { plan } }),
          });
        } }, 'Change plan')),
      h('button', { type: 'button', dataset: { action: 'revoke-all' }, onclick: () => act({
        title: `Sign ${u.email} out everywhere?`, message: `Every session of theirs ends now.${self}`,
        okLabel: 'Revoke all sessions', danger: true, done: 'Every session revoked',
        run: () => api('DELETE', `/api/v1/admin/users/${id}/sessions`),
      }) }, 'Revoke all sessions'),
      h('button', { type: 'button', class: 'danger', dataset: { action: 'erase' }, onclick: () => act({
        title: `Erase ${u.email}?`,
        message: `This cannot be undone: the account is closed and its personal data becomes unreadable for good. Type the email address to confirm.${self}`,
        inputs: [{ name: 'confirm_text', label: 'Email address', placeholder: u.email }],
        requireText: u.email, okLabel: 'Erase for good', danger: true, done: 'User erased',
        run: () => api('DELETE', `/api/v1/admin/users/${id}`),
      }) }, 'Erase…'));
  }

  async function act({ run, done, ...dialog }) {
    const values = await confirmDialog(dialog);
    if (!values) return;
    const buttons = main.querySelectorAll('.actions button, .sessions-table button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const data = await run(values);
      toast(done, 'ok');
      await Promise.all([loadUser(data?.position), loadTimeline(data?.position)]);
    } catch (err) {
      if (err.status !== 401) toast(errorText(err), 'error');
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function renderSessions(list) {
    const open = (s) => !s.revoked_at && (!s.expires_at || new Date(s.expires_at) > new Date());
    const sorted = [...list].sort((a, b) => Number(open(b)) - Number(open(a)) || String(b.created_at).localeCompare(String(a.created_at)));
    fill(sessions,
      h('div', { class: 'section-head' },
        h('h2', {}, 'Sessions'),
        h('span', { class: 'muted' }, `${list.filter(open).length} active of ${list.length}`)),
      sorted.length === 0 ? h('p', { class: 'empty' }, 'No sessions.') :
        h('div', { class: 'table-wrap' }, h('table', { class: 'table sessions-table' },
          h('thead', {}, h('tr', {}, ['Device and IP', 'User agent', 'Started', 'Last seen', 'Expires', 'State', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, sorted.map((s) => h('tr', { class: open(s) ? '' : 'dim' },
            h('td', { class: 'nowrap' }, s.device || '—', h('code', { class: 'device-ip' }, s.ip || 'no IP')),
            h('td', { class: 'ua', title: s.user_agent ?? '' }, s.user_agent || '—'),
            h('td', {}, time(s.created_at)),
            h('td', {}, time(s.last_seen_at)),
            h('td', {}, time(s.expires_at)),
            h('td', {}, s.revoked_at ? badge(`revoked${s.revoked_reason ? `: ${s.revoked_reason}` : ''}`, 'dark')
              : open(s) ? badge('active', 'ok') : badge('expired')),
            h('td', {}, open(s) && user?.status !== 'erased' ? h('button', { type: 'button', class: 'small', onclick: () => act({
              title: 'Revoke this session?', message: `${s.device || 'The device'} (${s.ip || 'unknown IP'}) is signed out now.`,
              okLabel: 'Revoke', danger: true, done: 'Session revoked',
              run: () => api('DELETE', `/api/v1/admin/users/${id}/sessions/${encodeURIComponent(s.id)}`),
            }) }, 'Revoke') : null)))))));
  }

  // --- the timeline --------------------------------------------------------------------

  const tl = {
    page: Math.max(1, Number(params.get('page')) || 1),
    order: params.get('order') === 'asc' ? 'asc' : 'desc',
    type: params.get('type') ?? '',
  };
  let generation = 0;
  const entries = h('div', { class: 'timeline-body' });
  const typeInput = h('input', { type: 'text', name: 'type', value: tl.type, list: 'event-types', placeholder: 'e.g. SessionStarted,LoginFailed', autocomplete: 'off', spellcheck: 'false' });
  const applyType = () => { tl.type = typeInput.value.replace(/\s+/g, ''); tl.page = 1; loadTimeline(); };
  typeInput.addEventListener('change', applyType);
  typeInput.addEventListener('keydown', (e) => { if (e.key === 'Enter') applyType(); });
  fill(timeline,
    h('div', { class: 'section-head' }, h('h2', {}, 'History'), h('span', { class: 'muted', id: 'timeline-total' })),
    h('div', { class: 'toolbar' },
      h('label', { class: 'field grow' }, 'Event types', typeInput),
      h('datalist', { id: 'event-types' }, KNOWN_TYPES.map((t) => h('option', { value: t }))),
      h('label', { class: 'field' }, 'Order',
        h('select', { name: 'order', onchange: (e) => { tl.order = e.target.value; tl.page = 1; loadTimeline(); } },
          h('option', { value: 'desc', selected: tl.order === 'desc' }, 'Newest first'),
          h('option', { value: 'asc', selected: tl.order === 'asc' }, 'Oldest first'))),
      h('button', { type: 'button', class: 'align-end', onclick: () => loadTimeline() }, 'Refresh')),
    entries);

  async function loadTimeline(minPosition) {
    const mine = ++generation;
    replaceHash(makeHash(`users/${encodeURIComponent(id)}`, { page: tl.page > 1 ? tl.page : '', order: tl.order === 'desc' ? '' : tl.order, type: tl.type }));
    entries.classList.add('loading');
    try {
      const data = await api('GET', `/api/v1/admin/users/${encodeURIComponent(id)}/history`, {
        query: { page: tl.page, per_page: 50, order: tl.order, type: tl.type }, signal, minPosition,
      });
      if (mine !== generation) return;
      const total = data.total ?? (data.items ?? []).length;
      document.getElementById('timeline-total').textContent = `${total} event${total === 1 ? '' : 's'}`;
      fill(entries,
        (data.items ?? []).length === 0 ? h('p', { class: 'empty' }, 'No events.') :
          h('ol', { class: 'timeline', dataset: { testid: 'timeline' } }, data.items.map(entry)),
        pager({ page: data.page ?? tl.page, perPage: data.per_page ?? 50, total, label: 'events', onPage: (p) => { tl.page = p; loadTimeline(); } }));
    } catch (err) {
      if (mine !== generation || err.name === 'AbortError') return;
      fill(entries, errorBox(err));
    } finally {
      if (mine === generation) entries.classList.remove('loading');
    }
  }

  const created = takePendingPosition(); // e.g. just created: read at least up to it
  loadUser(created);
  loadTimeline(created);
  return () => controller.abort();
}

/** The actor of an event as words: "Ada (user)", "admin@x (admin)", "system: seed". */
export function actorLabel(actor) {
  if (!actor) return 'unknown';
  const kind = actor.kind ?? 'unknown';
  const label = actor.label || actor.id;
  if (kind === 'anonymous') return 'anonymous';
  if (kind === 'system') return `system${label ? `: ${label}` : ''}`;
  return label ? `${label} (${kind.replace('_', ' ')})` : kind;
}

function entry(e) {
  const meta = [
    time(e.recorded_at),
    h('span', { class: 'actor', title: e.actor?.id ?? '' }, 'by ', actorLabel(e.actor)),
    e.ip ? h('span', {}, 'from ', h('code', {}, e.ip)) : null,
    e.user_agent ? h('span', { class: 'ua', title: e.user_agent }, e.user_agent) : null,
  ].filter(Boolean);
  const detail = (label, value) => (value ? [h('dt', {}, label), h('dd', {}, h('code', {}, value))] : null);
  return h('li', { class: `entry tone-${eventTone(e.event_type) || 'none'}`, dataset: { eventType: e.event_type, eventId: e.event_id ?? '' } },
    h('details', {},
      h('summary', {},
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        h('span', { class: 'entry-main' },
          h('span', { class: 'entry-line' },
            h('span', { class: 'entry-summary' }, e.summary || e.event_type),
            h('code', { class: 'etype' }, e.event_type)),
          h('span', { class: 'entry-meta' }, meta.flatMap((m, i) => (i ? [h('span', { class: 'sep', 'aria-hidden': 'true' }, '·'), m] : [m]))))),
      h('div', { class: 'entry-detail' },
        h('dl', { class: 'facts compact' },
          detail('Event id', e.event_id),
          detail('Aggregate', e.aggregate_type ? `${e.aggregate_type} ${e.aggregate_id ?? ''}` : null),
          detail('Actor', e.actor ? `${e.actor.kind}${e.actor.id ? ` ${e.actor.id}` : ''}` : null),
          detail('Request id', e.request_id),
          detail('Cursor', e.cursor)),
        h('pre', { class: 'payload' }, JSON.stringify(e.payload ?? null, null, 2)))));
}

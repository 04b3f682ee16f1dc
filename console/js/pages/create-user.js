// "New user": a dialog with a form for POST /api/v1/admin/users. The email, a display
// name, the role, the plan (from GET /api/v1/plans), whether the email counts as verified,
// and an optional password (without one the user is invited by mail to choose one).
// A 422's `fields` are shown next to their inputs, any error's `message` above the buttons.

import { api, getPlans } from '../api.js';
import { fill, h } from '../dom.js';

/** The request body of the form's values: empty optional fields are left out. */
export function createUserBody({ email, display_name, role, plan, verified, password }) {
  const body = { email: String(email ?? '').trim(), verified: Boolean(verified) };
  const name = String(display_name ?? '').trim();
  if (name) body.display_name = name;
  if (role) body.role = role;
  if (plan) body.plan = plan;
  if (password) body.password = password; // as typed: spaces count
  return body;
}

/**
 * Open the dialog. Resolves to `{ position, user }` once the user is created, or null when
 * cancelled. `signal` closes it (the page was left).
 */
export function createUserDialog({ signal } = {}) {
  const fieldError = (name) => h('span', { class: 'field-error', id: `create-${name}-error`, dataset: { field: name }, hidden: true });
  const input = (name, label, attrs, hint) =>
    h('label', { class: 'form-field' }, label,
      h('input', { name, 'aria-describedby': `create-${name}-error`, ...attrs }),
      fieldError(name),
      hint ? h('span', { class: 'hint' }, hint) : null);
  const select = (name, label, options) =>
    h('label', { class: 'form-field' }, label,
      h('select', { name, 'aria-describedby': `create-${name}-error` },
        options.map(([value, text, selected]) => h('option', { value, selected: Boolean(selected) }, text))),
      fieldError(name));

  const planField = select('plan', 'Plan', [['', 'Loading plans…', true]]);
  const formError = h('p', { class: 'error', role: 'alert', id: 'create-user-error', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'create-user-submit' }, 'Create user');
  const cancel = h('button', { type: 'button', id: 'create-user-cancel' }, 'Cancel');
  const form = h('form', { id: 'create-user-form', novalidate: true, autocomplete: 'off' },
    h('h2', {}, 'New user'),
    input('email', 'Email', { type: 'email', required: true, spellcheck: 'false', autocomplete: 'off', placeholder: 'name@example.com' }),
    input('display_name', 'Display name (optional)', { type: 'text', spellcheck: 'false', autocomplete: 'off' }),
    h('div', { class: 'form-row' },
      select('role', 'Role', [['user', 'user', true], ['admin', 'admin']]),
      planField),
    h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'verified' }),
      h('span', {}, 'Email already verified', h('span', { class: 'hint' }, 'No verification mail is sent.')),
      fieldError('verified')),
    input('password', 'Password (optional)', { type: 'password', autocomplete: 'new-password' },
      'Leave empty to send an invitation mail with a link to choose a password. At least 10 characters, not easy to guess.'),
    formError,
    h('div', { class: 'dialog-actions' }, cancel, submit));
  const dialog = h('dialog', { class: 'dialog form-dialog', id: 'create-user-dialog', 'aria-labelledby': 'create-user-title' }, form);
  form.querySelector('h2').id = 'create-user-title';
  document.body.append(dialog);

  getPlans().then((plans) => {
    const sel = planField.querySelector('select');
    fill(sel, plans.map((p) => h('option', { value: p.name, selected: Boolean(p.default) }, p.default ? `${p.name} (default)` : p.name)));
  }).catch(() => {
    const sel = planField.querySelector('select');
    fill(sel, h('option', { value: '', selected: true }, 'the default plan'));
  });

  const clearErrors = () => {
    formError.hidden = true;
    for (const el of form.querySelectorAll('.field-error')) { el.hidden = true; el.textContent = ''; }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  };
  const showErrors = (err) => {
    const rest = [];
    for (const [field, message] of Object.entries(err.fields ?? {})) {
      const slot = form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`);
      if (!slot) { rest.push(`${field}: ${message}`); continue; }
      slot.textContent = message;
      slot.hidden = false;
      form.elements[field]?.setAttribute('aria-invalid', 'true');
    }
    formError.textContent = [err.message || 'The user could not be created', ...rest.filter((r) => !err.message?.includes(r))].join(' · ');
    formError.hidden = false;
    const first = form.querySelector('[aria-invalid="true"]');
    (first ?? form.elements.email).focus();
  };

  return new Promise((resolve) => {
    let busy = false;
    const done = (value) => {
      signal?.removeEventListener('abort', onAbort);
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(value);
    };
    const onAbort = () => done(null);
    signal?.addEventListener('abort', onAbort);
    cancel.addEventListener('click', () => done(null));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); if (!busy) done(null); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (busy) return;
      clearErrors();
      const values = {
        email: form.elements.email.value,
        display_name: form.elements.display_name.value,
        role: form.elements.role.value,
        plan: form.elements.plan.value,
        verified: form.elements.verified.checked,
        password: form.elements.password.value,
      };
      const body = createUserBody(values);
      if (!body.email) {
        showErrors({ message: 'Enter an email address.', fields: { email: 'is required' } });
        return;
      }
      busy = true;
      submit.disabled = true;
      submit.textContent = 'Creating…';
      try {
        const data = await api('POST', '/api/v1/admin/users', { body });
        done(data);
      } catch (err) {
        if (err.status === 401 || err.status === 403) { done(null); return; } // the app signs out or refuses
        showErrors(err);
      } finally {
        busy = false;
        submit.disabled = false;
        submit.textContent = 'Create user';
      }
    });
    dialog.showModal();
    form.elements.email.focus();
  });
}

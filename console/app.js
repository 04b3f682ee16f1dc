// The Chronicle admin console: sign-in, the shell (top bar and navigation) and hash
// routing (#/users, #/users/<id>, #/live, #/events, #/health, #/usage). Each page module exports
// `render(main, route)`, which may return a function that stops what the page started
// (timers, streams) when another page is shown.

import * as api from './js/api.js';
import { errorText, fill, h } from './js/dom.js';
import * as users from './js/pages/users.js';
import * as user from './js/pages/user.js';
import * as live from './js/pages/live.js';
import * as events from './js/pages/events.js';
import * as health from './js/pages/health.js';
import * as usage from './js/pages/usage.js';
import { isRendered, markRendered, parseHash } from './js/router.js';

const $ = (id) => document.getElementById(id);

const views = {
  login: $('login-view'),
  refused: $('refused-view'),
  shell: $('shell'),
};

let cleanup = null;

function show(name) {
  for (const [key, el] of Object.entries(views)) el.hidden = key !== name;
  document.body.dataset.view = name;
}

function stopPage() {
  const stop = cleanup;
  cleanup = null;
  markRendered(null);
  if (typeof stop === 'function') {
    try {
      stop();
    } catch (e) {
      console.warn('stopping the page failed', e);
    }
  }
}

// --- signing in and out -------------------------------------------------------------

function showLogin(message = '') {
  stopPage();
  fill($('main'));
  show('login');
  const error = $('login-error');
  error.textContent = message;
  error.hidden = !message;
  $('login-password').value = '';
  $('login-submit').disabled = false;
  ($('login-email').value ? $('login-password') : $('login-email')).focus();
}

function showRefused() {
  stopPage();
  fill($('main')); // no admin data stays on the page
  $('refused-email').textContent = api.currentUser()?.email ?? 'this account';
  show('refused');
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  const error = $('login-error');
  if (!email || !password) {
    error.textContent = 'Enter your email and password.';
    error.hidden = false;
    return;
  }
  $('login-submit').disabled = true;
  error.hidden = true;
  try {
    const me = await api.login(email, password);
    $('login-password').value = '';
    if (me.role !== 'admin') {
      showRefused();
      return;
    }
    $('whoami').textContent = me.email;
    show('shell');
    route();
  } catch (err) {
    error.textContent = errorText(err);
    error.hidden = false;
    $('login-password').select();
  } finally {
    $('login-submit').disabled = false;
  }
});

function signOut() {
  api.logout();
  showLogin();
}
$('signout').addEventListener('click', signOut);
$('refused-signout').addEventListener('click', signOut);

api.onAuthProblem({
  unauthorized: (message) => showLogin(message),
  forbidden: () => showRefused(),
});

// --- routing ------------------------------------------------------------------------

const TITLES = { users: 'Users', live: 'Live events', events: 'Event log', health: 'Health', usage: 'Usage' };

function pageFor({ path }) {
  switch (path[0]) {
    case 'users':
      return path.length === 1 ? ['users', users] : ['users', user];
    case 'live':
      return ['live', live];
    case 'events':
      return ['events', events];
    case 'health':
      return ['health', health];
    case 'usage':
      return ['usage', usage];
    default:
      return [null, null];
  }
}

function route() {
  if (!api.currentUser() || document.body.dataset.view !== 'shell') return;
  if (location.hash === '' || location.hash === '#' || location.hash === '#/') {
    location.replace('#/users');
    return;
  }
  if (isRendered(location.hash)) return;
  stopPage();
  const current = parseHash();
  const [nav, page] = pageFor(current);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = $('main');
  fill(main);
  markRendered(location.hash);
  if (!page) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/users' }, 'Go to the users.')));
    return;
  }
  document.title = `${TITLES[nav] ?? nav} · Chronicle admin`;
  cleanup = page.render(main, current) ?? null;
}

window.addEventListener('hashchange', route);

showLogin();

#!/usr/bin/env node
// The admin console (/admin) in headless Chromium: the journey an admin takes, and the
// refusal of a normal user. Playwright (playwright-core only) drives Debian's chromium;
// no browser is ever downloaded.
//
// Environment:
//   BASE_URL          the running app, e.g. http://127.0.0.1:8080
//   ADMIN_EMAIL       an admin's email and password
//   ADMIN_PASSWORD
//   USER_EMAIL        a normal, verified user with at least one sign-in, and their password
//   USER_PASSWORD
//   SCREENSHOT_DIR    where the screenshots go (created if missing)
//   ERASE_EMAIL       optional: an account the test may erase through the console
//   CHROMIUM_PATH     optional (default /usr/bin/chromium)
//   STEP_TIMEOUT_MS   optional: how long one condition may take (default 20000)
//
// Exits 0 when every step passed, 1 (with the step and the reason) when one failed, 2
// when the environment is incomplete. Waits for conditions with Playwright's waiting APIs,
// never fixed sleeps.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`console.mjs: playwright-core is not installed (${e.message}).\nInstall it with: cd tests/browser && npm ci`);
  process.exit(2);
}

const missing = ['BASE_URL', 'ADMIN_EMAIL', 'ADMIN_PASSWORD', 'USER_EMAIL', 'USER_PASSWORD', 'SCREENSHOT_DIR']
  .filter((name) => !process.env[name]);
if (missing.length) {
  console.error(`console.mjs: set ${missing.join(', ')}`);
  process.exit(2);
}
const BASE_URL = process.env.BASE_URL.replace(/\/+$/, '');
const { ADMIN_EMAIL, ADMIN_PASSWORD, USER_EMAIL, USER_PASSWORD, SCREENSHOT_DIR } = process.env;
const ERASE_EMAIL = process.env.ERASE_EMAIL || '';
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.STEP_TIMEOUT_MS) || 20000;
if (!existsSync(CHROMIUM_PATH)) {
  console.error(`console.mjs: no Chromium at ${CHROMIUM_PATH}. Install Debian's: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  process.exit(2);
}
mkdirSync(SCREENSHOT_DIR, { recursive: true });

const origin = new URL(BASE_URL).origin;
const problems = []; // console errors, page errors, requests leaving the origin
const pages = new Map(); // name → page, for screenshots when a step fails
const started = Date.now();

class StepFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function step(name, fn) {
  const t0 = Date.now();
  process.stdout.write(`- ${name} … `);
  try {
    await fn();
  } catch (e) {
    console.log('FAILED');
    throw new StepFailed(`step "${name}" failed: ${e.message.split('\n=====')[0]}`);
  }
  console.log(`ok (${Date.now() - t0} ms)`);
}

async function shot(page, name, { fullPage = true } = {}) {
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky top bar belongs at the top
  await page.screenshot({ path, fullPage });
  return path;
}

/** A page whose console errors, uncaught errors and off-origin requests are recorded. */
async function open(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  pages.set(name, page);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    // the browser logs every 4xx answer it receives; the console handles those itself
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    problems.push(`[${name}] console error: ${text}`);
  });
  page.on('pageerror', (err) => problems.push(`[${name}] uncaught: ${err.message}`));
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith('data:') && new URL(url).origin !== origin) problems.push(`[${name}] request off the origin: ${url}`);
  });
  page.on('dialog', (dialog) => {
    problems.push(`[${name}] unexpected native dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return page;
}

async function signIn(page, email, password) {
  await page.locator('#login-view').waitFor({ state: 'visible' });
  await page.fill('#login-email', email);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

async function confirm(page, { fill } = {}) {
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ state: 'visible' });
  for (const [name, value] of Object.entries(fill ?? {})) await dialog.locator(`input[name="${name}"]`).fill(value);
  await dialog.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden' });
}

const browser = await chromium.launch({
  executablePath: CHROMIUM_PATH,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let exitCode = 0;
try {
  const viewport = { width: 1366, height: 860 };
  let userId;

  // --- a normal user is refused ---------------------------------------------------------
  await step('a normal user is refused the console', async () => {
    const context = await browser.newContext({ viewport });
    const page = await open(context, 'refused');
    const adminCalls = [];
    page.on('response', (res) => {
      if (res.url().includes('/api/v1/admin/') && res.ok()) adminCalls.push(res.url());
    });
    await page.goto(`${BASE_URL}/admin`);
    await signIn(page, USER_EMAIL, USER_PASSWORD);
    await page.getByText('This console is for admins').waitFor({ state: 'visible' });
    check(await page.locator('#shell').isHidden(), 'the console shell is visible to a non-admin');
    check(await page.locator('#main table').count() === 0, 'a non-admin sees a table of data');
    check(adminCalls.length === 0, `admin data reached a non-admin: ${adminCalls.join(', ')}`);
    await shot(page, 'refused');
    await context.close();
    pages.delete('refused');
  });

  // --- the admin's journey -------------------------------------------------------------
  const context = await browser.newContext({ viewport });
  const page = await open(context, 'admin');

  await step('the console is served with its security headers', async () => {
    const res = await page.goto(`${BASE_URL}/admin`);
    check(res.ok(), `GET /admin answered ${res.status()}`);
    const headers = res.headers();
    check((headers['content-type'] ?? '').startsWith('text/html'), `content-type is ${headers['content-type']}`);
    check((headers['cache-control'] ?? '').includes('no-cache'), `cache-control is ${headers['cache-control']}`);
    check((headers['content-security-policy'] ?? '').includes("script-src 'self'"), 'no CSP with script-src \'self\'');
  });

  await step('the admin signs in', async () => {
    await signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await page.locator('#shell').waitFor({ state: 'visible' });
    await page.locator('#whoami', { hasText: ADMIN_EMAIL }).waitFor();
    await page.locator('h1', { hasText: 'Users' }).waitFor();
    await page.locator('.users-table tbody tr').first().waitFor();
    await shot(page, 'users');
  });

  await step('finds the user by email', async () => {
    await page.fill('input[name="q"]', USER_EMAIL);
    const rows = page.locator('.users-table tbody tr');
    await page.locator(`.users-table tr[data-email="${USER_EMAIL}"]`).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('.users-table tbody tr').length === 1);
    check(await rows.count() === 1, `the search shows ${await rows.count()} rows`);
    check(page.url().includes('q='), 'the search is not kept in the URL');
  });

  await step('opens their timeline: registration and sign-in', async () => {
    await page.locator(`.users-table tr[data-email="${USER_EMAIL}"] a.user-link`).click();
    await page.waitForURL(/#\/users\/[0-9a-f-]{36}/);
    userId = page.url().match(/#\/users\/([0-9a-f-]{36})/)[1];
    await page.locator('[data-testid="profile-email"]', { hasText: USER_EMAIL }).waitFor();
    const registered = page.locator('.entry[data-event-type="UserRegistered"]');
    const signedIn = page.locator('.entry[data-event-type="SessionStarted"]').first();
    await registered.waitFor();
    await signedIn.waitFor();
    check((await registered.locator('.entry-summary').textContent()).includes('Registered'), 'UserRegistered has no readable summary');
    check((await signedIn.locator('.entry-meta').textContent()).includes('from'), 'SessionStarted shows no IP');
    // the payload on demand
    await registered.locator('summary').click();
    await registered.locator('.payload', { hasText: '"UserRegistered"' }).waitFor({ state: 'visible' });
    await page.locator('.sessions-table tbody tr').first().waitFor();
    await shot(page, 'user');
  });

  // --- creating a user -----------------------------------------------------------------
  const NEW_EMAIL = `console-created-${Date.now().toString(36)}@example.com`; // unique: reruns against one server work
  const NEW_PASSWORD = 'created-in-the-console-7Qx2';
  let createdId;
  await step('creates a user through the form (422 next to the field, 409 as a message)', async () => {
    const plans = (await (await fetch(`${BASE_URL}/api/v1/plans`)).json()).data;
    const plan = (plans.find((p) => !p.default) ?? plans[0]).name;
    await page.click('a[data-nav="users"]');
    await page.locator('.users-table tbody tr').first().waitFor();
    await page.click('#new-user');
    const dialog = page.locator('#create-user-dialog');
    await dialog.waitFor({ state: 'visible' });
    await dialog.locator(`select[name="plan"] option[value="${plan}"]`).waitFor({ state: 'attached' });
    // a password that is too short: 422, its message next to the password
    await dialog.locator('input[name="email"]').fill(USER_EMAIL);
    await dialog.locator('input[name="display_name"]').fill('Created In Console');
    await dialog.locator('select[name="role"]').selectOption('user');
    await dialog.locator('select[name="plan"]').selectOption(plan);
    await dialog.locator('input[name="verified"]').check();
    await dialog.locator('input[name="password"]').fill('short');
    await dialog.locator('#create-user-submit').click();
    await dialog.locator('#create-password-error', { hasText: 'at least 10 characters' }).waitFor();
    await dialog.locator('#create-user-error', { hasText: 'password' }).waitFor();
    check(await dialog.locator('input[name="password"]').getAttribute('aria-invalid') === 'true', 'the password is not marked invalid');
    await shot(page, 'create-user', { fullPage: false }); // a modal dialog's backdrop covers the viewport only
    // an email that has an account: 409, the envelope's message
    await dialog.locator('input[name="password"]').fill(NEW_PASSWORD);
    await dialog.locator('#create-user-submit').click();
    await dialog.locator('#create-user-error', { hasText: 'exists already' }).waitFor();
    check(await dialog.locator('#create-password-error').isHidden(), 'the password error stays after it was fixed');
    // created: the new user's page opens
    await dialog.locator('input[name="email"]').fill(NEW_EMAIL);
    await dialog.locator('#create-user-submit').click();
    await dialog.waitFor({ state: 'detached' });
    await page.waitForFunction(() => /^#\/users\/[0-9a-f-]{36}$/.test(location.hash));
    createdId = (await page.evaluate(() => location.hash)).slice('#/users/'.length);
    await page.locator('[data-testid="profile-email"]', { hasText: NEW_EMAIL }).waitFor();
    await page.locator('#user-subtitle', { hasText: 'Created In Console' }).waitFor();
    await page.locator('.profile .badge', { hasText: `plan: ${plan}` }).waitFor();
    await page.locator('.profile .badge', { hasText: 'email verified' }).waitFor();
    await page.locator('.entry[data-event-type="UserRegistered"]').waitFor();
    // and in the list
    await page.click('a[data-nav="users"]');
    await page.fill('input[name="q"]', NEW_EMAIL);
    await page.locator(`.users-table tr[data-email="${NEW_EMAIL}"][data-user-id="${createdId}"]`).waitFor();
  });

  // --- the event log -------------------------------------------------------------------
  const registrations = new Map(); // event id → aggregate id, of every page
  await step('the event log: filter by type, page forward and back, open a row', async () => {
    await page.click('a[data-nav="events"]');
    await page.locator('h1', { hasText: 'Event log' }).waitFor();
    await page.locator('.events-table tr.event-row').first().waitFor();
    const typeInput = page.locator('#event-filters input[name="type"]');
    const limitInput = page.locator('#event-filters input[name="limit"]');
    await typeInput.fill('UserRegistered');
    await typeInput.press('Escape'); // closes the type suggestions (a datalist), which could take the next keys
    await limitInput.fill('4');
    check(await typeInput.inputValue() === 'UserRegistered' && await limitInput.inputValue() === '4',
      `the filters read "${await typeInput.inputValue()}" and "${await limitInput.inputValue()}"`);
    await page.click('#events-apply');
    const hash = () => page.evaluate(() => location.hash);
    const filtered = '#/events?type=UserRegistered&limit=4';
    await page.locator(`#events-results[data-shown="${filtered}"]`).waitFor(); // that page is on screen
    check(await hash() === filtered, `the filters are not kept in the URL (${await hash()})`);
    const range = page.locator('#events-range');
    check(/^Events 1–4\b/.test(await range.textContent()), `the first page says "${await range.textContent()}"`);
    /** Click a pager button and wait until the page it asked for is on screen. */
    const turn = async (button) => {
      const before = await page.locator('#events-results').getAttribute('data-shown');
      await page.click(button);
      await page.waitForFunction((was) => {
        const results = document.getElementById('events-results');
        return results.dataset.shown !== was && results.dataset.shown === location.hash && results.getAttribute('aria-busy') === 'false';
      }, before);
    };
    const rowsOfPage = () => page.locator('.events-table tr.event-row').evaluateAll((rows) =>
      rows.map((r) => ({ type: r.dataset.eventType, id: r.dataset.eventId, aggregate: r.dataset.aggregateId })));
    let pages = 1;
    let rows = await rowsOfPage();
    check(rows.length === 4, `the first page has ${rows.length} rows, not 4`);
    for (;;) {
      check(rows.every((r) => r.type === 'UserRegistered'), `the filter lets through ${rows.map((r) => r.type).join(', ')}`);
      for (const r of rows) registrations.set(r.id, r.aggregate);
      if (await page.locator('#events-next').isDisabled()) break;
      check(pages < 100, 'the pages do not end');
      await turn('#events-next');
      pages++;
      rows = await rowsOfPage();
    }
    check(pages >= 2, `only ${pages} page of UserRegistered with 4 a page`);
    if (rows.length === 0) await turn('#events-prev'); // a full page was the last: the one after it is empty
    check([...registrations.values()].includes(createdId), 'the created user\'s registration is not in the log');
    check((await hash()).includes('after='), 'the page\'s cursor is not kept in the URL');
    // back one page, and forward again to the last
    const last = await range.textContent();
    await turn('#events-prev');
    check(await range.textContent() !== last, 'Previous shows the same page');
    await turn('#events-next');
    check(await range.textContent() === last, `Next after Previous shows "${await range.textContent()}", not "${last}"`);
    // the created user's registration, opened: payload (personal data opened) and metadata
    const row = page.locator(`.events-table tr.event-row[data-aggregate-id="${createdId}"]`);
    await row.locator('button.toggle').click();
    const detail = page.locator('.events-table tr.event-detail:visible');
    await detail.locator('.payload', { hasText: NEW_EMAIL }).waitFor();
    await detail.locator('.payload', { hasText: '"actor_role": "admin"' }).waitFor();
    check((await row.locator('.actor').textContent()).includes('admin'), 'the actor of the creation is not the admin');
    for (const t of await page.locator('.toast').all()) await t.click({ timeout: 2000 }).catch(() => {}); // dismissed; or it faded meanwhile
    await page.locator('.toast').first().waitFor({ state: 'detached' });
    await shot(page, 'events');
  });

  await step('downloads the filtered log as NDJSON', async () => {
    const failed = page.locator('.toast.error').first();
    const saved = page.waitForEvent('download').then((d) => ({ download: d }));
    const broke = failed.waitFor().then(async () => ({ error: await failed.textContent() }));
    saved.catch(() => {});
    broke.catch(() => {});
    await page.click('#events-download');
    const { download, error } = await Promise.race([saved, broke]);
    check(!error, `the console says: ${error}`);
    check(/^chronicle-events-.*-UserRegistered\.ndjson$/.test(download.suggestedFilename()), `the file is called ${download.suggestedFilename()}`);
    const text = readFileSync(await download.path(), 'utf8');
    check(text.endsWith('\n'), 'the download does not end with a newline');
    const events = text.slice(0, -1).split('\n').map((line, i) => {
      try {
        return JSON.parse(line);
      } catch (e) {
        throw new Error(`line ${i + 1} of the download is not JSON (${e.message}): ${line.slice(0, 120)}`);
      }
    });
    check(events.every((e) => e.event_type === 'UserRegistered'), 'the download holds other types than UserRegistered');
    check(events.length === registrations.size, `the download has ${events.length} events, the pages showed ${registrations.size}`);
    check(events.every((e) => registrations.has(e.event_id)), 'the download and the pages hold different events');
    check(events.some((e) => e.aggregate_id === createdId && JSON.stringify(e.payload).includes(NEW_EMAIL)), 'the created user is not in the download');
    await page.locator('#download-status', { hasText: `Saved ${registrations.size} events` }).waitFor();
  });

  let second;
  await step('deactivating the user shows up live', async () => {
    await page.click('a[data-nav="live"]');
    await page.locator('#live-status[data-state="open"]').waitFor();
    // a second tab (its own memory, so it signs in too) opens the user by link and acts
    second = await open(context, 'second');
    await second.goto(`${BASE_URL}/admin#/users/${userId}`);
    await signIn(second, ADMIN_EMAIL, ADMIN_PASSWORD);
    await second.locator('[data-testid="profile-email"]', { hasText: USER_EMAIL }).waitFor();
    await second.click('button[data-action="deactivate"]');
    await confirm(second, { fill: { reason: 'browser test' } });
    await second.locator('.profile .badge', { hasText: 'disabled' }).waitFor();
    await second.locator('.entry[data-event-type="UserDeactivated"]').first().waitFor();
    const row = page.locator('.live-row[data-event-type="UserDeactivated"]').first();
    await row.waitFor();
    // the subject is named by email once looked up
    await row.locator('a.subject', { hasText: USER_EMAIL }).waitFor();
    await shot(second, 'user-deactivated');
  });

  await step('reactivating shows up live too', async () => {
    await second.click('button[data-action="reactivate"]');
    await confirm(second);
    await second.locator('.profile .badge', { hasText: 'active' }).first().waitFor();
    await page.locator('.live-row[data-event-type="UserReactivated"]').first().waitFor();
    await shot(page, 'live');
  });

  await step('changing the plan (plans from /api/v1/plans)', async () => {
    const plans = await (await fetch(`${BASE_URL}/api/v1/plans`)).json();
    const names = plans.data.map((p) => p.name);
    check(names.length >= 2, `this test needs two plans; /api/v1/plans has ${names.join(', ')}`);
    const current = (await second.locator('.profile .badge', { hasText: 'plan: ' }).textContent()).replace('plan: ', '').trim();
    const next = names.find((n) => n !== current);
    await second.locator(`select[name="plan"] option[value="${next}"]`).waitFor({ state: 'attached' });
    await second.selectOption('select[name="plan"]', next);
    await second.click('button[data-action="plan"]');
    await confirm(second);
    await second.locator('.profile .badge', { hasText: `plan: ${next}` }).waitFor();
    await second.locator('.entry[data-event-type="PlanChanged"]').first().waitFor();
    await page.locator('.live-row[data-event-type="PlanChanged"]').first().waitFor();
    await second.close();
    pages.delete('second');
  });

  await step('the live stream filters by type', async () => {
    await page.fill('#main input[name="type"]', 'UserDeactivated');
    await page.press('#main input[name="type"]', 'Enter');
    await page.locator('#live-status[data-state="open"]', { hasText: 'UserDeactivated' }).waitFor();
    check(page.url().includes('type=UserDeactivated'), 'the filter is not kept in the URL');
  });

  await step('health: read models, relay, refreshed every 5 s', async () => {
    await page.click('a[data-nav="health"]');
    await page.locator('.projections-table tr[data-projection]').first().waitFor();
    await page.locator('.projections-table tr[data-projection="users"]').waitFor();
    const first = await page.locator('#health-updated').textContent();
    check(first.startsWith('Updated'), `the health page says "${first}"`);
    await page.waitForFunction((before) => {
      const now = document.getElementById('health-updated')?.textContent ?? '';
      return now.startsWith('Updated') && now !== before;
    }, first, { timeout: 15000 });
    await shot(page, 'health');
    await page.click('tr[data-projection="event_stats"] button[data-action="rebuild"]');
    await confirm(page);
    await page.locator('.toast', { hasText: 'Rebuild of event_stats started' }).waitFor();
    await page.locator('tr[data-projection="event_stats"] .badge', { hasText: 'running' }).waitFor();
  });

  await step('usage: charts and counts', async () => {
    await page.click('a[data-nav="usage"]');
    await page.locator('[data-testid="users-total"]').waitFor();
    await page.waitForFunction(() => document.querySelectorAll('.chart canvas').length === 5);
    const total = Number((await page.locator('[data-testid="users-total"]').textContent()).replace(/\D/g, ''));
    check(total >= 2, `the usage page counts ${total} users`);
    await shot(page, 'usage');
  });

  if (ERASE_EMAIL) await step('erasing needs the email typed', async () => {
    await page.click('a[data-nav="users"]');
    await page.fill('input[name="q"]', ERASE_EMAIL);
    await page.locator(`.users-table tr[data-email="${ERASE_EMAIL}"] a.user-link`).click();
    await page.locator('[data-testid="profile-email"]', { hasText: ERASE_EMAIL }).waitFor();
    await page.click('button[data-action="erase"]');
    const ok = page.locator('#confirm-ok');
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    check(await ok.isDisabled(), 'erasing can be confirmed without typing the email');
    await page.fill('#confirm-dialog input[name="confirm_text"]', 'someone@else.com');
    check(await ok.isDisabled(), 'erasing can be confirmed with another email');
    await confirm(page, { fill: { confirm_text: ERASE_EMAIL } });
    await page.locator('.profile .badge', { hasText: 'erased' }).waitFor();
    await page.locator('.entry[data-event-type="UserErased"]').first().waitFor();
    await shot(page, 'user-erased');
  });

  await step('a reload forgets the token; signing out too', async () => {
    await page.click('a[data-nav="usage"]');
    await page.locator('[data-testid="users-total"]').waitFor();
    await page.reload();
    await page.locator('#login-view').waitFor({ state: 'visible' });
    check(await page.locator('#shell').isHidden(), 'the console is shown after a reload without signing in');
    await signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await page.locator('h1', { hasText: 'Usage' }).waitFor(); // back where it was
    await page.click('#signout');
    await page.locator('#login-view').waitFor({ state: 'visible' });
  });

  await step('a 401 goes back to sign-in (the admin ends their own sessions)', async () => {
    await signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await page.locator('#shell').waitFor({ state: 'visible' });
    await page.click('a[data-nav="users"]');
    await page.fill('input[name="q"]', ADMIN_EMAIL);
    await page.locator(`.users-table tr[data-email="${ADMIN_EMAIL}"] a.user-link`).click();
    await page.locator('.profile .badge', { hasText: 'you' }).waitFor();
    await page.click('button[data-action="revoke-all"]');
    await confirm(page);
    await page.locator('#login-view').waitFor({ state: 'visible' });
    await page.locator('#login-error', { hasText: 'Sign in again' }).waitFor();
    check(await page.locator('#main').evaluate((m) => m.children.length === 0), 'admin data stays on the page after a 401');
  });

  await step('no script errors, CSP violations or requests off the origin', async () => {
    check(problems.length === 0, `\n  ${problems.join('\n  ')}`);
  });

  await context.close();
  console.log(`console.mjs: every step passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SCREENSHOT_DIR}`);
} catch (e) {
  exitCode = 1;
  console.error(`\nconsole.mjs: ${e instanceof StepFailed ? e.message : e.stack}`);
  for (const [name, page] of pages) {
    if (page.isClosed()) continue;
    const path = await shot(page, `failure-${name}`).catch(() => null);
    if (path) console.error(`console.mjs: the ${name} page at ${page.url()} is in ${path}`);
  }
  if (problems.length) console.error(`console.mjs: also seen:\n  ${problems.join('\n  ')}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(exitCode);

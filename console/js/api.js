// The API client. The tokens live in this module's memory only (never in storage or
// cookies): a reload means signing in again. Every call sends `Authorization: Bearer`
// with `credentials: 'omit'`, so the API's cookies are neither sent nor stored and there
// is nothing for another site to forge (no CSRF).

let auth = null; // { access, refresh, user }
let refreshing = null; // the refresh in flight, shared by concurrent calls

const handlers = { unauthorized: () => {}, forbidden: () => {} };

/** What the app does when the API says the session is over (401) or not allowed (403). */
export function onAuthProblem({ unauthorized, forbidden }) {
  handlers.unauthorized = unauthorized;
  handlers.forbidden = forbidden;
}

/** An error answer of the API: the envelope's `message`, `error` kind and `fields`. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = body?.message || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.kind = body?.error ?? null;
    this.fields = body?.fields ?? null;
    this.body = body;
  }
}

export function currentUser() {
  return auth?.user ?? null;
}

async function readJson(res) {
  const type = res.headers.get('content-type') ?? '';
  if (!type.includes('json')) {
    const text = await res.text().catch(() => '');
    return { message: text.slice(0, 200) || `HTTP ${res.status}` };
  }
  return res.json().catch(() => null);
}

function networkError(e) {
  if (e?.name === 'AbortError') throw e;
  return new ApiError(0, { message: `The server cannot be reached (${e?.message ?? e})`, error: 'network' });
}

/** Sign in; resolves to the user (`role` says whether this console is theirs). */
export async function login(email, password) {
  let res;
  try {
    res = await fetch('/api/v1/auth/login', {
      method: 'POST',
      credentials: 'omit',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ email, password }),
    });
  } catch (e) {
    throw networkError(e);
  }
  const body = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, body);
  auth = { access: body.data.access_token, refresh: body.data.refresh_token, user: body.data.user };
  return auth.user;
}

/** Forget the tokens, and end the session on the server (best effort). */
export function logout() {
  const was = auth;
  auth = null;
  if (was) {
    fetch('/api/v1/auth/logout', {
      method: 'POST',
      credentials: 'omit',
      headers: { authorization: `Bearer ${was.access}` },
    }).catch(() => {});
  }
}

/** Trade the refresh token for a new pair once the access token has expired. */
async function refresh() {
  if (!auth?.refresh) return false;
  refreshing ??= (async () => {
    try {
      const res = await fetch('/api/v1/auth/refresh', {
        method: 'POST',
        credentials: 'omit',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ refresh_token: auth.refresh }),
      });
      if (!res.ok) return false;
      const body = await res.json();
      auth = { ...auth, access: body.data.access_token, refresh: body.data.refresh_token };
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === null || value === undefined || value === '') continue;
    u.searchParams.set(key, String(value));
  }
  return u.pathname + u.search;
}

/**
 * Call the API. Resolves to the envelope's `data` (or, with `raw`, the Response, for
 * streams); rejects with an ApiError carrying the envelope's message.
 * Options: `body` (sent as JSON), `query`, `signal`, `headers`, `minPosition` (read your
 * writes: `X-Min-Position`), `raw`.
 */
export async function api(method, path, { body, query, signal, headers = {}, minPosition, raw = false } = {}) {
  if (!auth) {
    handlers.unauthorized('Sign in first.');
    throw new ApiError(401, { message: 'Sign in first', error: 'unauthorized' });
  }
  const send = () => {
    const h = { accept: raw ? 'text/event-stream' : 'application/json', ...headers, authorization: `Bearer ${auth.access}` };
    if (body !== undefined) h['content-type'] = 'application/json';
    if (minPosition) h['x-min-position'] = minPosition;
    return fetch(url(path, query), {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      signal,
    });
  };
  let res;
  try {
    res = await send();
    if (res.status === 401) {
      const problem = await readJson(res.clone());
      if (problem?.error === 'token_expired' && (await refresh())) res = await send();
    }
  } catch (e) {
    throw networkError(e);
  }
  if (res.status === 401) {
    const problem = await readJson(res);
    auth = null;
    handlers.unauthorized(problem?.message ? `Your session has ended (${problem.message}). Sign in again.` : 'Your session has ended. Sign in again.');
    throw new ApiError(401, problem);
  }
  if (res.status === 403) {
    const problem = await readJson(res);
    if (problem?.error === 'forbidden' || !problem?.error) handlers.forbidden();
    throw new ApiError(403, problem);
  }
  if (raw && res.ok) return res;
  if (res.status === 202 || res.status === 204) {
    const data = res.status === 204 ? null : await readJson(res);
    return data?.data ?? null;
  }
  const envelope = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, envelope);
  return envelope?.data ?? null;
}

/** The plans (public), fetched once. */
let plans = null;
export async function getPlans() {
  plans ??= fetch('/api/v1/plans', { credentials: 'omit', headers: { accept: 'application/json' } })
    .then((r) => (r.ok ? r.json() : Promise.reject(new ApiError(r.status, null))))
    .then((b) => (Array.isArray(b.data) ? b.data : b.data?.plans ?? []))
    .catch((e) => {
      plans = null;
      throw e;
    });
  return plans;
}

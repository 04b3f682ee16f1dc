// Hash routing helpers shared by the shell and the pages.

let rendered = null; // the hash the shell last rendered

/** '#/users/abc?x=1' → { path: ['users', 'abc'], params: URLSearchParams } */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  return {
    path: path.split('/').filter(Boolean).map(decodeURIComponent),
    params: new URLSearchParams(query),
  };
}

/** Build '#/users?q=x' from a path and the non-empty params. */
export function makeHash(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(key, String(value));
  }
  const qs = query.toString();
  return `#/${path}${qs ? `?${qs}` : ''}`;
}

/** A page that keeps its state in the hash (filters, page) updates it without re-rendering. */
export function replaceHash(hash) {
  if (hash === location.hash) return;
  history.replaceState(null, '', hash);
  rendered = location.hash;
}

export function markRendered(hash) {
  rendered = hash;
}

export function isRendered(hash) {
  return rendered === hash;
}

// A log position a page should read at least up to (read your writes across a hash
// change): set before navigating to a page that shows what was just written, taken once
// by that page.
let pendingPosition = null;

export function readAfterNextRoute(position) {
  pendingPosition = position ?? null;
}

export function takePendingPosition() {
  const position = pendingPosition;
  pendingPosition = null;
  return position;
}

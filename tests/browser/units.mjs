// Unit tests of the console's pure parts (no browser): the event-stream parser, the
// day series of the usage charts, routes, the event log's filters and downloads, and the
// body of a new user. Run: node --test units.mjs

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { eventStreamParser } from '../../console/js/sse.js';
import { lastDays } from '../../console/js/pages/usage.js';
import { parseHash, makeHash } from '../../console/js/router.js';

function parse(text, chunk) {
  const events = [];
  const comments = [];
  const parser = eventStreamParser((e) => events.push(e), (c) => comments.push(c));
  for (let i = 0; i < text.length; i += chunk) parser.push(text.slice(i, i + chunk));
  parser.end();
  return { events, comments };
}

test('the event-stream parser reads events however the text is cut', () => {
  const text = '\uFEFF: keep-alive\r\n\r\nevent: event\r\nid: 01-02\r\ndata: {"a":1}\r\n\r\n'
    + 'data: first\ndata: second\n\nevent: event\rdata: {"b":2}\r\r'
    + 'data\n\nretry: 10\nunknown: x\ndata:no-space\n\n';
  for (const chunk of [1, 2, 3, 7, text.length]) {
    const { events, comments } = parse(text, chunk);
    assert.deepEqual(comments, ['keep-alive'], `chunk ${chunk}`);
    assert.deepEqual(events, [
      { event: 'event', data: '{"a":1}', id: '01-02' },
      { event: 'message', data: 'first\nsecond', id: '01-02' },
      { event: 'event', data: '{"b":2}', id: '01-02' },
      { event: 'message', data: '', id: '01-02' },
      { event: 'message', data: 'no-space', id: '01-02' },
    ], `chunk ${chunk}`); // a bare `data` line is an empty data line: dispatched, as browsers do
  }
});

test('an event cut off by the end of the stream is dropped', () => {
  const { events } = parse('data: whole\n\ndata: half', 4);
  assert.deepEqual(events.map((e) => e.data), ['whole']);
});

test('the usage charts cover the last 30 UTC days, ending today', () => {
  const days = lastDays(30, new Date('2026-03-01T23:30:00Z'));
  assert.equal(days.length, 30);
  assert.equal(days[29], '2026-03-01');
  assert.equal(days[0], '2026-01-31');
});

test('hash routes round-trip', () => {
  const hash = makeHash('users', { q: 'a b&c', status: '', page: 2 });
  assert.equal(hash, '#/users?q=a+b%26c&page=2');
  const { path, params } = parseHash(hash);
  assert.deepEqual(path, ['users']);
  assert.equal(params.get('q'), 'a b&c');
  assert.deepEqual(parseHash('#/users/0190-ab').path, ['users', '0190-ab']);
});

test('the event log\'s filters: from the hash, to the query and back', async () => {
  const { filtersFrom, eventsQuery, eventsHash, DEFAULT_LIMIT } = await import('../../console/js/pages/events.js');
  const f = filtersFrom(new URLSearchParams('type=UserRegistered, SessionStarted&limit=4&after=00000000000000aa-0000000000000001&since=2026-03-01T10:00:00Z&personal=bogus'));
  assert.equal(f.type, 'UserRegistered,SessionStarted');
  assert.equal(f.limit, 4);
  assert.equal(f.since, '2026-03-01T10:00:00.000Z');
  assert.equal(f.personal, '');
  assert.deepEqual(eventsQuery(f), {
    type: 'UserRegistered,SessionStarted', since: '2026-03-01T10:00:00.000Z',
    after: '00000000000000aa-0000000000000001', limit: 4,
  });
  // the download: the same filters, neither a page's cursor nor a limit
  assert.deepEqual(eventsQuery(f, { stream: true }), { type: 'UserRegistered,SessionStarted', since: '2026-03-01T10:00:00.000Z' });
  assert.deepEqual(filtersFrom(new URLSearchParams(eventsHash(f).split('?')[1])), f);
  for (const bad of ['0', '1001', '2.5', 'x']) assert.equal(filtersFrom(new URLSearchParams(`limit=${bad}`)).limit, DEFAULT_LIMIT);
  assert.equal(eventsHash(filtersFrom(new URLSearchParams(''))), '#/events');
});

test('the event log\'s times, file names and line counts', async () => {
  const { isoFromLocalInput, localInputFromIso, downloadName, countNewlines, byteSize } = await import('../../console/js/pages/events.js');
  const iso = '2026-03-01T10:20:30.000Z';
  assert.equal(isoFromLocalInput(localInputFromIso(iso)), iso); // whatever the time zone
  assert.equal(isoFromLocalInput(''), '');
  assert.equal(isoFromLocalInput('not a time'), '');
  assert.equal(downloadName({ type: 'UserRegistered' }, new Date(iso)), 'chronicle-events-20260301-102030Z-UserRegistered.ndjson');
  assert.equal(downloadName({ type: 'A,B' }, new Date(iso)), 'chronicle-events-20260301-102030Z.ndjson');
  assert.equal(countNewlines(new TextEncoder().encode('{"a":1}\n{"b":"x\\ny"}\n')), 2);
  assert.equal(byteSize(999), '999 B');
  assert.equal(byteSize(1500), '1.5 kB');
  assert.equal(byteSize(2_500_000), '2.5 MB');
});

test('creating a user sends only what was filled in', async () => {
  const { createUserBody } = await import('../../console/js/pages/create-user.js');
  assert.deepEqual(createUserBody({ email: ' a@b.co ', display_name: '  ', role: 'user', plan: 'free', verified: false, password: '' }),
    { email: 'a@b.co', verified: false, role: 'user', plan: 'free' });
  assert.deepEqual(createUserBody({ email: 'a@b.co', display_name: ' Ada ', role: 'admin', plan: '', verified: true, password: ' secret pass ' }),
    { email: 'a@b.co', verified: true, display_name: 'Ada', role: 'admin', password: ' secret pass ' });
});

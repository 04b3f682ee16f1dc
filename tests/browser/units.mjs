// Unit tests of the console's pure parts (no browser): the event-stream parser and the
// day series of the usage charts. Run: node --test units.mjs

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

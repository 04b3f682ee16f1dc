// Usage: users by status, role and plan; charts of sign-ups, active users and sign-ins per
// day, and messages and tokens per day (the last 30 UTC days, from GET /api/v1/admin/stats);
// events by type. Charts are drawn with uPlot (vendored in /admin/vendor/uplot).

import { api } from '../api.js';
import { errorBox, fill, h, number, time } from '../dom.js';

const DAY = 86400;
/** Whole-number steps for the y axes (counts have no fractions). */
const COUNT_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p)).sort((a, b) => a - b);

/** The last `n` UTC days as 'YYYY-MM-DD', oldest first, ending today. */
export function lastDays(n, today = new Date()) {
  const end = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  return Array.from({ length: n }, (_, i) => new Date(end - (n - 1 - i) * DAY * 1000).toISOString().slice(0, 10));
}

const dayKey = (d) => String(d ?? '').slice(0, 10);

export function render(main) {
  const controller = new AbortController();
  const charts = [];
  const body = h('div', { class: 'stack' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Usage'), h('span', { class: 'muted' }, 'The last 30 days (UTC)')), body);

  // charts follow their cards' width (window resizes, scrollbars, the grid's breakpoints)
  const observer = new ResizeObserver((changes) => {
    for (const change of changes) {
      const chart = charts.find((c) => c.box === change.target);
      if (chart && Math.abs(chart.plot.width - size(chart.box).width) > 1) chart.plot.setSize(size(chart.box));
    }
  });

  api('GET', '/api/v1/admin/stats', { signal: controller.signal })
    .then((stats) => {
      fill(body, summary(stats.users ?? {}), h('div', { class: 'chart-grid' }, chartCards(stats)), eventsTable(stats.events_by_type ?? []));
      drawCharts(stats);
    })
    .catch((err) => {
      if (err.name === 'AbortError' || err.status === 401 || err.status === 403) return;
      fill(body, errorBox(err));
    });

  const specs = [
    { id: 'signups', title: 'Sign-ups per day', unit: 'Sign-ups', color: '#3b5bdb', from: 'activity', field: 'signups' },
    { id: 'active', title: 'Active users per day', unit: 'Active users', color: '#2f9e44', from: 'activity', field: 'active_users' },
    { id: 'logins', title: 'Sign-ins per day', unit: 'Sign-ins', color: '#1098ad', from: 'activity', field: 'logins' },
    { id: 'messages', title: 'Messages per day', unit: 'Messages', color: '#ae3ec9', from: 'usage', kind: 'messages' },
    { id: 'tokens', title: 'Tokens per day', unit: 'Tokens', color: '#e8590c', from: 'usage', kind: 'tokens' },
  ];

  function chartCards(stats) {
    return specs.map((s) => {
      const values = series(stats, s);
      const total = values.reduce((a, b) => a + b, 0);
      s.box = h('div', { class: 'chart', dataset: { chart: s.id } });
      s.values = values;
      return h('section', { class: `card chart-card chart-${s.id}` },
        h('div', { class: 'section-head' }, h('h2', {}, s.title), h('span', { class: 'muted' }, `${number(total)} in 30 days`)),
        s.box);
    });
  }

  function drawCharts() {
    const uPlot = window.uPlot;
    const days = lastDays(30);
    const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
    for (const s of specs) {
      if (!uPlot) {
        fill(s.box, h('p', { class: 'error-text' }, 'The chart library did not load.'));
        continue;
      }
      const opts = {
        ...size(s.box),
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
        scales: { x: { time: true, range: (_u, min, max) => [min - DAY / 2, max + DAY / 2] }, y: { range: (_u, _min, max) => [0, Math.max(1, Math.ceil(max * 1.15))] } },
        axes: [
          { stroke: '#667', grid: { show: false }, ticks: { stroke: '#dde' }, values: '{MMM} {D}' },
          { stroke: '#667', grid: { stroke: '#eef' }, ticks: { show: false }, size: 48, incrs: COUNT_STEPS, values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? compact(t) : '')) },
        ],
        series: [
          { label: 'Day', value: '{YYYY}-{MM}-{DD}' },
          {
            label: s.unit,
            stroke: s.color,
            fill: `${s.color}cc`,
            width: 0,
            value: (_u, v) => (v === null || v === undefined ? '—' : number(v)),
            paths: uPlot.paths.bars({ size: [0.7, 24] }),
            points: { show: false },
          },
        ],
      };
      s.box.title = `${s.title}: ${s.values.map((v, i) => `${days[i]} ${v}`).filter((_, i) => s.values[i]).join(', ') || 'none'}`;
      const plot = new uPlot(opts, [xs, s.values], s.box);
      charts.push({ plot, box: s.box });
      observer.observe(s.box);
    }
  }

  return () => {
    controller.abort();
    observer.disconnect();
    for (const { plot } of charts) plot.destroy();
  };
}

function size(box) {
  const width = Math.max(240, Math.floor(box.clientWidth || box.parentElement?.clientWidth || 400));
  return { width, height: 190 };
}

function compact(n) {
  return Math.abs(n) >= 1e6 ? `${+(n / 1e6).toFixed(1)}M` : Math.abs(n) >= 1e4 ? `${+(n / 1e3).toFixed(1)}k` : String(n);
}

/** One number per day for the last 30 days (0 for days the API leaves out). */
function series(stats, spec) {
  const byDay = new Map();
  if (spec.from === 'activity') {
    for (const row of stats.activity ?? []) byDay.set(dayKey(row.day), Number(row[spec.field] ?? 0));
  } else {
    for (const row of stats.usage ?? []) {
      if (row.kind !== spec.kind) continue;
      byDay.set(dayKey(row.day), (byDay.get(dayKey(row.day)) ?? 0) + Number(row.total ?? 0));
    }
  }
  return lastDays(30).map((d) => byDay.get(d) ?? 0);
}

function summary(users) {
  const breakdown = (title, counts = {}) => h('div', { class: 'card stat' },
    h('div', { class: 'stat-title' }, title),
    Object.keys(counts).length === 0 ? h('div', { class: 'muted' }, '—') :
      h('dl', { class: 'facts compact counts' }, Object.entries(counts).sort((a, b) => b[1] - a[1])
        .flatMap(([k, v]) => [h('dt', {}, k.replaceAll('_', ' ')), h('dd', {}, number(v))])));
  return h('div', { class: 'cards' },
    h('div', { class: 'card stat' }, h('div', { class: 'stat-title' }, 'Users'), h('div', { class: 'stat-value', dataset: { testid: 'users-total' } }, number(users.total ?? 0))),
    breakdown('By status', users.by_status),
    breakdown('By role', users.by_role),
    breakdown('By plan', users.by_plan));
}

function eventsTable(rows) {
  const sorted = [...rows].sort((a, b) => (b.count ?? 0) - (a.count ?? 0));
  return h('section', { class: 'card' },
    h('div', { class: 'section-head' }, h('h2', {}, 'Events by type'), h('span', { class: 'muted' }, `${rows.length} types`)),
    sorted.length === 0 ? h('p', { class: 'empty' }, 'No events yet.') :
      h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, ['Aggregate', 'Event', 'Count', 'Last recorded'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, sorted.map((r) => h('tr', {},
          h('td', {}, r.aggregate_type ?? '—'),
          h('td', {}, h('code', {}, r.event_type)),
          h('td', { class: 'num' }, number(r.count)),
          h('td', {}, time(r.last_recorded_at))))))));
}

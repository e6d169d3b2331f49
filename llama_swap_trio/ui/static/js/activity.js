// The Activity view: requests in flight (live from the feed), then finished ones (feed + history).
import { optional } from './api.js';
import { DASH, fmtClock, fmtMs, fmtNumber, h, setText } from './dom.js';
import { setHistory, store } from './store.js';

const SHOWN = 200;
const inflightBody = document.querySelector('#inflight-table tbody');
const inflightTable = document.getElementById('inflight-table');
const inflightEmpty = document.getElementById('inflight-empty');
const body = document.querySelector('#activity-table tbody');
const table = document.getElementById('activity-table');
const empty = document.getElementById('activity-empty');
const note = document.getElementById('history-note');
const summary = document.getElementById('activity-summary');

document.getElementById('activity-refresh').addEventListener('click', () => loadHistory());

/** Fetch /api/activity (quietly absent on a daemon without it). */
export async function loadHistory() {
  try {
    const answer = await optional('/api/activity?limit=200');
    setHistory(answer === null ? null : answer.requests || []);
  } catch (error) {
    if (error.name !== 'AuthError') {
      note.hidden = false;
      setText(note, `History could not be read: ${error.message}`);
    }
  }
}

function cell(label, content, cls) {
  return h('td', { 'data-label': label, class: cls }, content);
}

function tokens(r) {
  if (r.prompt_tokens === undefined && r.completion_tokens === undefined) return DASH;
  return `${r.prompt_tokens ?? DASH} → ${r.completion_tokens ?? DASH}`;
}

function statusCell(r) {
  const failed = r.status >= 400 || r.error;
  return h('span', { class: failed ? 'status-bad' : 'status-ok' }, String(r.status ?? DASH),
    r.error ? h('span', { class: 'sub' }, r.error) : null);
}

function finishedRow(r) {
  const failed = r.status >= 400 || Boolean(r.error);
  const classes = [failed ? 'failed' : '', r.fresh ? 'fresh' : ''].filter(Boolean).join(' ');
  r.fresh = false;
  const queue = r.queue_ms !== undefined
    ? h('span', {}, fmtMs(r.queue_ms), r.load_ms > 0 ? h('span', { class: 'sub' }, `load ${fmtMs(r.load_ms)}`) : null)
    : DASH;
  return h('tr', { class: classes || undefined, dataset: { model: r.model, status: String(r.status) } },
    cell('Time', fmtClock(r.at)),
    cell('Model', r.model, 'mono'),
    cell('Path', r.path, 'mono'),
    cell('Status', statusCell(r)),
    cell('Queue', queue),
    cell('TTFB', fmtMs(r.ttfb_ms)),
    cell('Duration', fmtMs(r.duration_ms)),
    cell('Tokens', tokens(r)),
    cell('Tok/s', r.tokens_per_second !== undefined ? fmtNumber(r.tokens_per_second, 1) : DASH));
}

function inflightRow(r) {
  const elapsed = r.at ? Date.now() - r.at * 1000 : null;
  return h('tr', { dataset: { model: r.model, id: r.id } },
    cell('Started', fmtClock(r.at)),
    cell('Model', r.model, 'mono'),
    cell('Path', r.path, 'mono'),
    cell('Elapsed', fmtMs(elapsed)),
    cell('Chunks', r.chunks ? String(r.chunks) : DASH),
    cell('Rate', r.rate !== null && r.rate !== undefined ? `${fmtNumber(r.rate, 1)}/s` : DASH));
}

export function render() {
  const open = [...store.open.values()].sort((a, b) => (b.at || 0) - (a.at || 0));
  inflightBody.replaceChildren(...open.map(inflightRow));
  inflightTable.hidden = open.length === 0;
  inflightEmpty.hidden = open.length !== 0;
  if (!store.tracksRequests) setText(inflightEmpty, 'This daemon does not report requests while they run.');
  else setText(inflightEmpty, 'No request is running.');

  const rows = store.finished.slice(0, SHOWN);
  body.replaceChildren(...rows.map(finishedRow));
  table.hidden = rows.length === 0;
  empty.hidden = rows.length !== 0;
  const failed = store.finished.filter((r) => r.status >= 400 || r.error).length;
  setText(summary, `${store.finished.length} finished${failed ? `, ${failed} failed` : ''}, ${open.length} in flight`);
  if (store.historyLoaded === null) {
    note.hidden = false;
    setText(note, 'This daemon keeps no request history (no /api/activity): only requests seen since this page opened are shown.');
  } else if (store.historyLoaded) {
    note.hidden = true;
  }
}

/** Once a second while shown: the elapsed times of requests in flight. */
export function tick() {
  if (store.open.size) render();
}

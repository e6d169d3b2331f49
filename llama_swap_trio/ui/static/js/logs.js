// The Logs view: the proxy's log, every model's output or one model's, backlog then live.
import { api, modelPath } from './api.js';
import { h } from './dom.js';
import { store } from './store.js';

const MAX_CHARS = 400000; // keep the page light on a chatty upstream: drop the oldest text
const out = document.getElementById('logs-out');
const source = document.getElementById('logs-source');
const follow = document.getElementById('logs-follow');
let reader = null; // {controller, name}
let active = false;

document.getElementById('logs-clear').addEventListener('click', () => { out.textContent = ''; });
source.addEventListener('change', () => { if (active) open(source.value); });
out.addEventListener('scroll', () => {
  // scrolling up stops following; back at the bottom follows again
  follow.checked = out.scrollTop + out.clientHeight >= out.scrollHeight - 8;
});

function streamPath(name) {
  return modelPath('/logs/stream/', name);
}

/** Fill the source list: proxy, every model together, then each model. */
export function renderSources() {
  const wanted = [['proxy', 'Proxy'], ['upstream', 'All models'],
    ...[...store.models.keys()].sort().map((id) => [id, id])];
  const current = source.value || 'proxy';
  const same = source.options.length === wanted.length
    && wanted.every(([value], i) => source.options[i].value === value);
  if (!same) {
    source.replaceChildren(...wanted.map(([value, label]) => h('option', { value }, label)));
    source.value = wanted.some(([value]) => value === current) ? current : 'proxy';
  }
}

function append(text) {
  out.append(text);
  if (out.textContent.length > MAX_CHARS) out.textContent = out.textContent.slice(-MAX_CHARS / 2);
  if (follow.checked) out.scrollTop = out.scrollHeight;
}

function note(text) {
  out.append(h('span', { class: 'sys' }, `${text}\n`));
}

async function open(name) {
  close();
  out.textContent = '';
  const controller = new AbortController();
  reader = { controller, name };
  try {
    const response = await api(streamPath(name), { raw: true, signal: controller.signal });
    const decoder = new TextDecoder();
    const stream = response.body.getReader();
    for (;;) {
      const { value, done } = await stream.read();
      if (done) break;
      append(decoder.decode(value, { stream: true }));
    }
    if (reader && reader.controller === controller) note('[the log stream ended; the daemon is shutting down or reloading]');
  } catch (error) {
    if (controller.signal.aborted || error.name === 'AuthError') return;
    note(`[log stream failed: ${error.message}]`);
  }
}

function close() {
  if (reader) { reader.controller.abort(); reader = null; }
}

export function show() {
  active = true;
  renderSources();
  if (!reader || reader.name !== source.value) open(source.value);
}

export function hide() {
  active = false;
  close();
}

/** Reopen after the daemon came back (a new feed connection). */
export function reconnect() {
  if (active) open(source.value);
}

/** Show one model's log (used by links from other views). */
export function select(name) {
  renderSources();
  source.value = name;
}

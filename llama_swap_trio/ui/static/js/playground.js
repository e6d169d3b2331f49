// The Playground: chat with any model, tokens streamed as they arrive, a stop button.
//
// The request is a streaming /v1/chat/completions read with fetch + ReadableStream (EventSource
// cannot POST). Stop aborts the fetch: the connection closes and the daemon cancels the upstream
// request at once (SPEC 3.1). While the model loads, the daemon's loading state (SPEC 3.4:
// `reasoning_content` chunks, with send_loading_state) fills the loading box; without it the box
// shows the model's state from the feed.
import { api } from './api.js';
import { fmtMs, fmtNumber, h, setText } from './dom.js';
import { localModel, store } from './store.js';

const select = document.getElementById('pg-model');
const log = document.getElementById('pg-log');
const empty = document.getElementById('pg-empty');
const form = document.getElementById('pg-form');
const input = document.getElementById('pg-input');
const send = document.getElementById('pg-send');
const stop = document.getElementById('pg-stop');
const STORAGE = 'llama-swap-trio.playground-model';

let messages = [];
let current = null; // the answer being streamed: {controller, bubble, ...}

document.getElementById('pg-clear').addEventListener('click', () => {
  if (current) current.controller.abort();
  messages = [];
  log.replaceChildren(empty);
  empty.hidden = false;
  input.focus();
});
stop.addEventListener('click', () => { if (current) current.controller.abort(); });
input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || current || !select.value) return;
  input.value = '';
  chat(select.value, text);
});
select.addEventListener('change', () => sessionStorage.setItem(STORAGE, select.value));

/** The model list: every listed id (models, aliases when listed, selectors, peers' models). */
export function renderModels() {
  const ids = store.listed.length ? store.listed.map((r) => r.id) : [...store.models.keys()];
  const current = select.value || sessionStorage.getItem(STORAGE) || '';
  const same = select.options.length === ids.length && ids.every((id, i) => select.options[i].value === id);
  if (!same) {
    select.replaceChildren(...ids.map((id) => h('option', { value: id }, id)));
    if (ids.includes(current)) select.value = current;
  }
}

function bubble(role, text) {
  const content = h('span', { class: 'content' }, text);
  const root = h('div', { class: `msg ${role}` }, h('span', { class: 'who' }, role === 'user' ? 'You' : ''), content);
  empty.hidden = true;
  log.append(root);
  log.scrollTop = log.scrollHeight;
  return { root, content };
}

function setBusy(busy) {
  send.hidden = busy;
  stop.hidden = !busy;
  if (busy) stop.focus();
  else input.focus();
}

/** Update the "loading" box from the feed while nothing has streamed yet. */
export function tick() {
  if (!current || current.firstToken) return;
  const entry = localModel(current.model);
  const waited = fmtMs(performance.now() - current.started);
  if (current.reasoning) return; // the daemon's own loading-state text says more
  if (entry && entry.state !== 'ready') {
    current.loading.hidden = false;
    setText(current.summary, `Loading ${entry.id} (${entry.state})… ${waited}`);
  } else if (performance.now() - current.started > 400) {
    current.loading.hidden = false;
    setText(current.summary, `Waiting for the first token… ${waited}`);
  }
}

async function chat(model, text) {
  messages.push({ role: 'user', content: text });
  bubble('user', text);
  const answer = bubble('assistant', '');
  answer.root.querySelector('.who').textContent = model;
  answer.root.classList.add('streaming');
  // the loading state (or a model's reasoning): open while it streams, folded once tokens come
  const summary = h('summary', {}, 'Loading…');
  const reasoningText = h('div');
  const loading = h('details', { class: 'loading', hidden: true, open: true }, summary, reasoningText);
  const entry = localModel(model);
  const wasReady = !entry || entry.state === 'ready';
  const meta = h('span', { class: 'meta' });
  answer.root.insertBefore(loading, answer.content);
  answer.root.append(meta);
  const controller = new AbortController();
  current = { controller, model, loading, summary, started: performance.now(), firstToken: null, reasoning: '' };
  setBusy(true);
  tick();
  let content = '';
  let usage = null;
  let failure = '';
  try {
    const response = await api('/v1/chat/completions', {
      method: 'POST',
      raw: true,
      signal: controller.signal,
      body: { model, messages, stream: true, stream_options: { include_usage: true } },
    });
    const type = response.headers.get('content-type') || '';
    if (!type.includes('text/event-stream')) {
      const body = await response.json(); // a server that does not stream
      content = body.choices?.[0]?.message?.content || '';
      usage = body.usage || null;
      setText(answer.content, content);
    } else {
      for await (const data of sseData(response.body)) {
        if (data === '[DONE]') break;
        let chunk;
        try { chunk = JSON.parse(data); } catch { continue; }
        if (chunk.error) { failure = chunk.error.message || JSON.stringify(chunk.error); break; }
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices?.[0]?.delta || {};
        if (delta.reasoning_content) {
          current.reasoning += delta.reasoning_content;
          loading.hidden = false;
          if (current.firstToken === null) setText(summary, wasReady ? 'Thinking…' : `Loading ${model}…`);
          setText(reasoningText, current.reasoning.trim());
        }
        if (delta.content) {
          if (current.firstToken === null) {
            current.firstToken = performance.now();
            foldLoading(current, wasReady);
          }
          content += delta.content;
          setText(answer.content, content);
          log.scrollTop = log.scrollHeight;
        }
      }
    }
  } catch (error) {
    if (controller.signal.aborted) failure = 'stopped';
    else failure = error.message || String(error);
  }
  const ended = performance.now();
  answer.root.classList.remove('streaming');
  if (!current.reasoning) loading.hidden = true;
  if (content) messages.push({ role: 'assistant', content });
  const parts = [];
  if (failure === 'stopped') parts.push('stopped');
  else if (failure) {
    answer.root.classList.add('error');
    if (!content) setText(answer.content, failure);
    else parts.push(failure);
  }
  if (usage?.completion_tokens !== undefined) parts.push(`${usage.completion_tokens} tokens`);
  if (current.firstToken !== null) {
    parts.push(`first token ${fmtMs(current.firstToken - current.started)}`);
    const generating = (ended - current.firstToken) / 1000;
    if (usage?.completion_tokens && generating > 0) parts.push(`${fmtNumber(usage.completion_tokens / generating, 1)} tok/s`);
  }
  parts.push(`total ${fmtMs(ended - current.started)}`);
  setText(meta, parts.join(' · '));
  answer.root.dataset.done = failure === 'stopped' ? 'stopped' : failure ? 'error' : 'ok';
  current = null;
  setBusy(false);
}

/** The first token came: fold the loading text into one line (what it said last). */
function foldLoading(answer, wasReady) {
  if (!answer.reasoning) { answer.loading.hidden = true; return; }
  answer.loading.open = false;
  const lines = answer.reasoning.trim().split('\n');
  setText(answer.summary, wasReady ? 'Reasoning' : lines[lines.length - 1]);
}

/** The `data:` payloads of an SSE body, as they arrive. */
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
        const lines = event.split(/\r?\n/).filter((l) => l.startsWith('data:'));
        if (lines.length) yield lines.map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      }
    }
  } finally {
    reader.releaseLock();
  }
}

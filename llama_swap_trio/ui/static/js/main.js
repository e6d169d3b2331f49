// The page's start: the API key, the feed, the views and the hash routes (#/models, ...).
import { api, getKey, onAuthFailure, setKey, tryKey } from './api.js';
import { connectFeed } from './feed.js';
import { toast } from './dom.js';
import { applyEvent, setListed, store, subscribe } from './store.js';
import * as models from './models.js';
import * as activity from './activity.js';
import * as swaps from './swaps.js';
import * as logs from './logs.js';
import * as playground from './playground.js';

const VIEWS = { models, activity, swaps, logs, playground };
const conn = document.getElementById('conn');
const connText = conn.querySelector('.conn-text');
const versionEl = document.getElementById('version');
let current = '';
let feed = null;
let snapshots = 0;
let historyWanted = false;
let frame = 0;

// -- views and routes ---------------------------------------------------------------------------

function viewName() {
  const name = location.hash.replace(/^#\/?/, '').split('/')[0];
  return Object.hasOwn(VIEWS, name) ? name : 'models';
}

function show(name) {
  if (name === current) return;
  if (current && VIEWS[current].hide) VIEWS[current].hide();
  current = name;
  for (const key of Object.keys(VIEWS)) {
    document.getElementById(`view-${key}`).hidden = key !== name;
  }
  for (const tab of document.querySelectorAll('.tabs a')) {
    if (tab.dataset.view === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  if (name === 'activity' && !historyWanted) {
    historyWanted = true;
    if (feed) activity.loadHistory();
  }
  renderCurrent();
  if (VIEWS[name].show) VIEWS[name].show();
}

function renderCurrent() {
  if (current === 'models') models.render();
  else if (current === 'activity') activity.render();
  else if (current === 'swaps') swaps.render();
  else if (current === 'logs') logs.renderSources();
  else if (current === 'playground') playground.renderModels();
}

// changes are drawn once per frame, and only for the view on screen
subscribe(() => {
  if (!frame) {
    frame = requestAnimationFrame(() => {
      frame = 0;
      renderCurrent();
    });
  }
});

setInterval(() => {
  const view = VIEWS[current];
  if (view && view.tick) view.tick();
  playground.tick();
}, 1000);

window.addEventListener('hashchange', () => show(viewName()));

// -- connection status ---------------------------------------------------------------------------

function status(state, text) {
  conn.className = `conn ${state}`;
  connText.textContent = text;
}

function onStatus({ state, retryIn }) {
  store.live = state === 'live';
  if (state === 'live') status('live', 'live');
  else if (state === 'retry') status('retry', `reconnecting in ${Math.max(1, Math.round(retryIn / 1000))}s…`);
  else status('down', 'disconnected');
}

// -- the API key ------------------------------------------------------------------------------------

const dialog = document.getElementById('key-dialog');
const keyForm = document.getElementById('key-form');
const keyInput = document.getElementById('key-input');
const keyError = document.getElementById('key-error');
const keyReason = document.getElementById('key-reason');
let asking = null;

dialog.addEventListener('cancel', (event) => event.preventDefault()); // nothing works without it

/** Ask for a key until the daemon accepts one; resolves once it did (with /v1/models). */
function askKey(reason) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    keyReason.textContent = reason;
    keyError.hidden = true;
    keyInput.value = '';
    status('down', 'API key needed');
    dialog.showModal();
    keyInput.focus();
    keyForm.onsubmit = async (event) => {
      event.preventDefault();
      const key = keyInput.value.trim();
      if (!key) return;
      let answer;
      try {
        answer = await tryKey(key);
      } catch (error) {
        keyError.hidden = false;
        keyError.textContent = `The daemon could not be reached: ${error.message}`;
        return;
      }
      if (answer === 'refused') {
        keyError.hidden = false;
        keyError.textContent = 'Wrong key: the daemon refused it (401). Check the api_keys list in its config.';
        keyInput.select();
        return;
      }
      setKey(key);
      setListed(answer.data || []);
      dialog.close();
      asking = null;
      resolve();
    };
  });
  return asking;
}

/** Wait until the daemon answers with our key (asking for one if needed). */
async function unlock() {
  let delay = 500;
  for (;;) {
    let answer;
    try {
      answer = await tryKey(getKey());
    } catch {
      status('down', 'daemon unreachable, retrying…');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    if (answer !== 'refused') { setListed(answer.data || []); return; }
    const reason = getKey()
      ? 'The daemon refused the saved key (was its config changed?). Enter a valid key.'
      : 'This daemon needs an API key (api_keys in its config).';
    setKey('');
    await askKey(reason);
  }
}

onAuthFailure(async () => {
  if (asking) return;
  if (feed) { feed.stop(); feed = null; }
  setKey('');
  await askKey('The daemon no longer accepts the key (was its config changed?). Enter a valid key.');
  startFeed();
});

// -- data --------------------------------------------------------------------------------------------

async function refreshListed() {
  try {
    const answer = await api('/v1/models');
    setListed(answer.data || []);
  } catch { /* AuthError is handled by its listener; the next snapshot retries */ }
}

function reloaded(message) {
  if (!message.ok) {
    toast(`Configuration reload failed: ${(message.errors || []).join('; ') || 'see the proxy log'}`, { bad: true, ms: 12000 });
    return;
  }
  const parts = ['restarted', 'added', 'removed']
    .filter((key) => (message[key] || []).length)
    .map((key) => `${key} ${message[key].join(', ')}`);
  toast(`Configuration reloaded${parts.length ? `: ${parts.join('; ')}` : ''}`);
}

function onMessage(message) {
  applyEvent(message);
  if (message.type === 'reload') reloaded(message);
  if (message.type !== 'snapshot') return;
  snapshots += 1;
  versionEl.textContent = store.version ? `v${store.version}` : '';
  if (snapshots > 1) {
    refreshListed(); // the list may have changed (a reload, a restart): the first came with the key check
    // a new connection (daemon restart or reload): catch up on what happened meanwhile
    if (historyWanted) activity.loadHistory();
    logs.reconnect();
    models.loadProfiles();
  }
}

async function checkReconnect() {
  const answer = await tryKey(getKey()); // throws while the daemon is unreachable
  if (answer === 'refused') {
    const error = new Error('key refused');
    error.stopFeed = true;
    queueMicrotask(async () => {
      setKey('');
      await askKey('The daemon no longer accepts the key (was its config changed?). Enter a valid key.');
      startFeed();
    });
    throw error;
  }
}

function startFeed() {
  feed = connectFeed({ onMessage, onStatus, check: checkReconnect });
  if (historyWanted) activity.loadHistory();
  models.loadProfiles();
}

async function start() {
  show(viewName());
  await unlock();
  startFeed();
}

start();

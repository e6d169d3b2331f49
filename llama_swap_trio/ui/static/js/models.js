// The Models view: every model with its state, load and unload; profiles, selectors, peers.
import { api, modelPath, optional } from './api.js';
import { DASH, fmtBytes, fmtMs, fmtSeconds, h, setText, toast } from './dom.js';
import { memory, queuedFor, remoteRecords, selectorState, setProfiles, store } from './store.js';

const grid = document.getElementById('models-grid');
const summary = document.getElementById('models-summary');
const unloadAll = document.getElementById('unload-all');
const memoryBox = document.getElementById('memory');
const cards = new Map(); // model id → {root, fields…}
const pending = new Map(); // model id → 'load' | 'unload'
let unloadingAll = false;

function ttlLeft(entry) {
  if (!entry.ttl) return 'never';
  if (entry.state !== 'ready') return DASH;
  if (entry.inFlight > 0) return 'paused';
  if (entry.unknownIdle || !entry.lastActive) return `≤ ${fmtSeconds(entry.ttl)}`;
  return fmtSeconds(entry.ttl - (Date.now() - entry.lastActive) / 1000);
}

function stat(label) {
  const value = h('dd', {}, DASH);
  return { el: h('div', {}, h('dt', {}, label), value), value };
}

function listedRecord(id) {
  return store.listed.find((r) => r.id === id);
}

function makeCard(id) {
  const badge = h('span', { class: 'badge' });
  const name = h('div', { class: 'card-name' });
  const desc = h('div', { class: 'card-desc' });
  const inFlight = stat('In flight');
  const queued = stat('Queued');
  const ttl = stat('TTL left');
  const lastLoad = stat('Last load');
  const error = h('div', { class: 'card-error', hidden: true });
  const load = h('button', { type: 'button', class: 'primary', onclick: () => act(id, 'load') }, 'Load');
  const unload = h('button', { type: 'button', onclick: () => act(id, 'unload') }, 'Unload');
  const aliases = h('span', { class: 'aliases' });
  const mem = h('span', { class: 'chip mem', hidden: true });
  const root = h('article', { class: 'card', dataset: { model: id }, 'aria-label': `model ${id}` },
    h('div', { class: 'card-head' },
      h('div', { class: 'card-title' }, h('div', { class: 'card-id' }, id), name, desc),
      badge),
    h('dl', { class: 'stats' }, inFlight.el, queued.el, ttl.el, lastLoad.el),
    error,
    h('div', { class: 'card-actions' }, load, unload, mem, aliases));
  load.setAttribute('aria-label', `Load ${id}`);
  unload.setAttribute('aria-label', `Unload ${id}`);
  return { root, badge, name, desc, mem, inFlight, queued, ttl, lastLoad, error, load, unload, aliases };
}

function updateCard(card, entry) {
  const busy = pending.get(entry.id);
  const state = entry.state;
  setText(card.badge, state);
  card.badge.className = `badge ${state}`;
  card.root.dataset.state = state;
  const record = listedRecord(entry.id);
  setText(card.name, entry.name || record?.name || '');
  setText(card.desc, record?.description || '');
  setText(card.inFlight.value, entry.inFlight ?? 0);
  setText(card.queued.value, queuedFor(entry.id));
  setText(card.ttl.value, ttlLeft(entry));
  setText(card.lastLoad.value, entry.lastLoadMs !== undefined ? fmtMs(entry.lastLoadMs) : DASH);
  card.lastLoad.value.title = entry.lastLoadAt ? `loaded at ${new Date(entry.lastLoadAt).toLocaleTimeString()}` : '';
  card.error.hidden = !entry.error;
  setText(card.error, entry.error || '');
  const size = memory()?.size(entry.id);
  card.mem.hidden = size === undefined;
  setText(card.mem, size === undefined ? '' : fmtBytes(size));
  card.mem.title = size === undefined ? '' : 'GPU memory this model counts for';
  const aliases = record?.meta?.aliases;
  setText(card.aliases, aliases && aliases.length ? `aka ${aliases.join(', ')}` : '');
  setText(card.load, busy === 'load' ? 'Loading…' : 'Load');
  setText(card.unload, busy === 'unload' ? 'Unloading…' : 'Unload');
  card.load.disabled = Boolean(busy) || state === 'ready' || state === 'starting';
  card.unload.disabled = Boolean(busy) || state === 'stopped' || state === 'shutdown';
}

async function act(id, action) {
  pending.set(id, action);
  render();
  try {
    await api(modelPath(`/api/models/${action}/`, id), { method: 'POST' });
  } catch (error) {
    if (error.name !== 'AuthError') {
      toast(`${action === 'load' ? 'Loading' : 'Unloading'} ${id} failed: ${error.message}`, { bad: true });
      const entry = store.models.get(id);
      if (entry && action === 'load') entry.error = error.message;
    }
  } finally {
    pending.delete(id);
    render();
  }
}

unloadAll.addEventListener('click', async () => {
  unloadingAll = true;
  unloadAll.disabled = true;
  setText(unloadAll, 'Unloading…');
  try {
    const answer = await api('/api/models/unload', { method: 'POST' });
    const names = answer.unloaded || [];
    toast(names.length ? `Unloaded ${names.join(', ')}` : 'Nothing was running');
  } catch (error) {
    if (error.name !== 'AuthError') toast(`Unload all failed: ${error.message}`, { bad: true });
  } finally {
    unloadingAll = false;
    setText(unloadAll, 'Unload all');
    render();
  }
});

function renderGrid() {
  const ids = [...store.models.keys()].sort();
  if (!ids.length) {
    if (!grid.querySelector('.empty')) grid.replaceChildren(h('p', { class: 'empty' }, 'No models yet.'));
    return;
  }
  grid.querySelector('.empty')?.remove();
  for (const id of [...cards.keys()]) {
    if (!store.models.has(id)) { cards.get(id).root.remove(); cards.delete(id); }
  }
  let previous = null;
  for (const id of ids) {
    let card = cards.get(id);
    if (!card) { card = makeCard(id); cards.set(id, card); }
    updateCard(card, store.models.get(id));
    const expected = previous ? previous.nextSibling : grid.firstChild;
    if (card.root !== expected) grid.insertBefore(card.root, expected);
    previous = card.root;
  }
  if (!performance.getEntriesByName('ui:models-drawn').length) performance.mark('ui:models-drawn');
  const running = ids.filter((id) => !['stopped', 'shutdown'].includes(store.models.get(id).state)).length;
  setText(summary, `${running} of ${ids.length} running`);
  unloadAll.disabled = unloadingAll || running === 0;
  renderMemory();
}

/** The GPU memory budget ([resources] gpu_memory) as a bar: used of the budget. */
function renderMemory() {
  const mem = memory();
  memoryBox.hidden = !mem;
  if (!mem) return;
  const bar = memoryBox.querySelector('.bar-fill');
  const share = mem.budget ? Math.min(1, mem.used / mem.budget) : 0;
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  bar.classList.toggle('full', share > 0.9);
  memoryBox.querySelector('.bar').hidden = !mem.budget;
  setText(memoryBox.querySelector('.mem-text'), mem.budget
    ? `${fmtBytes(mem.used)} of ${fmtBytes(mem.budget)} in use`
    : `${fmtBytes(mem.used)} in use`);
}

// -- profiles, selectors and peers (shown only when the daemon has them) ------------------------

const profilesBox = document.getElementById('profiles');
const selectorsBox = document.getElementById('selectors');
const peersBox = document.getElementById('peers');

export async function loadProfiles() {
  try {
    setProfiles(await optional('/api/profiles'));
  } catch (error) {
    if (error.name !== 'AuthError') setProfiles(null);
  }
}

async function profileAction(name) {
  try {
    if (name === null) await api('/api/profiles/active', { method: 'DELETE' });
    else await api(`/api/profiles/${encodeURIComponent(name)}`, { method: 'POST' });
    await loadProfiles();
  } catch (error) {
    if (error.name !== 'AuthError') toast(`Profile change failed: ${error.message}`, { bad: true });
  }
}

function renderProfiles() {
  const data = store.profiles;
  const profiles = data && Array.isArray(data.profiles) ? data.profiles : [];
  profilesBox.hidden = profiles.length === 0;
  if (!profiles.length) return;
  const rows = profiles.map((p) => {
    const active = data.active === p.name;
    const pins = Object.entries(p.pins || {}).map(([from, to]) =>
      h('span', { class: 'chip' }, h('span', { class: 'mono' }, from), '→', h('span', { class: 'mono' }, to === '' ? '(hidden)' : to)));
    return h('div', { class: 'list-row' },
      h('span', { class: 'mono' }, p.name),
      active ? h('span', { class: 'badge ready' }, 'active') : null,
      h('span', { class: 'desc grow' }, p.description || ''),
      h('span', { class: 'chips' }, pins),
      active
        ? h('button', { type: 'button', onclick: () => profileAction(null) }, 'Deactivate')
        : h('button', { type: 'button', onclick: () => profileAction(p.name) }, 'Activate'));
  });
  profilesBox.replaceChildren(h('h2', {}, 'Profiles'), h('div', { class: 'list' }, rows));
}

function describe(record) {
  const parts = [record.name, record.description].filter(Boolean);
  const about = record.meta?.selector || {};
  if (about.strategy) parts.push(`strategy ${about.strategy}${about.spillover ? ` (spillover ${about.spillover})` : ''}`);
  if (Array.isArray(about.targets)) parts.push(`targets ${about.targets.join(', ')}`);
  return parts.join(' · ');
}

function renderRemote() {
  const { selectors, peers } = remoteRecords();
  selectorsBox.hidden = selectors.length === 0;
  if (selectors.length) {
    selectorsBox.replaceChildren(h('h2', {}, 'Selectors'), h('div', { class: 'list' },
      selectors.map((r) => h('div', { class: 'list-row' },
        h('span', { class: 'mono' }, r.id), h('span', { class: 'desc grow' }, describe(r)),
        ((state) => h('span', { class: `badge ${state}` }, state))(selectorState(r))))));
  }
  peersBox.hidden = peers.size === 0;
  if (peers.size) {
    peersBox.replaceChildren(h('h2', {}, 'Peers'), h('div', { class: 'list' },
      [...peers.entries()].sort().map(([peer, records]) => h('div', { class: 'list-row' },
        h('span', { class: 'mono' }, peer),
        h('span', { class: 'chips grow' }, records.map((r) => h('span', { class: 'chip mono' }, r.id)))))));
  }
}

export function render() {
  renderGrid();
  renderProfiles();
  renderRemote();
}

/** The view ticks once a second while shown (TTL countdowns). */
export function tick() { renderGrid(); }


// What the page knows about the daemon, built from the feed and a few GETs; views read it.

const MAX_FINISHED = 500;
const MAX_SWAPS = 200;
export const OWNER = 'llama-swap-trio';

export const store = {
  live: false,
  version: '',
  /** id → {id, name, state, ttl, inFlight, since, readyAt, lastActive, lastLoadMs, lastLoadAt, error} */
  models: new Map(),
  /** /v1/models records (local models, aliases, selectors, peers' models) */
  listed: [],
  /** the queue of requests waiting for their turn: [{model, position}] */
  queue: [],
  /** whether the daemon reports requests (request_start, snapshot.requests) */
  tracksRequests: false,
  /** open requests: id → {id, model, path, at, chunks, bytes, rate, seenAt} */
  open: new Map(),
  /** finished requests, newest first: the feed's `request` events and the history */
  finished: [],
  /** false until fetched; null when the daemon has no /api/activity */
  historyLoaded: false,
  /** swaps since the page opened, newest first: {model, evict, startedAt, ok, durationMs, error} */
  swaps: [],
  /** GET /api/profiles, or null when the daemon has none */
  profiles: null,
  /** the snapshot's `resources` ({gpu_memory, sizes: {model: [running, asleep]}}), or null */
  resources: null,
};

const listeners = new Set();

/** Call fn(topic) after each change; topics: models, activity, swaps, listed, profiles, status. */
export function subscribe(fn) { listeners.add(fn); }

export function notify(topic) { for (const fn of listeners) fn(topic); }

function model(id) {
  let entry = store.models.get(id);
  if (!entry) {
    entry = { id, name: '', state: 'stopped', ttl: 0, inFlight: 0, since: Date.now() };
    store.models.set(id, entry);
  }
  return entry;
}

/** Apply one feed message. */
export function applyEvent(msg) {
  switch (msg.type) {
    case 'snapshot': return applySnapshot(msg);
    case 'model_state': {
      const entry = model(msg.model);
      const at = msg.at ? msg.at * 1000 : Date.now();
      entry.state = msg.state;
      entry.since = at;
      if (msg.state === 'ready') { entry.readyAt = at; entry.lastActive = at; entry.error = ''; }
      if (msg.state === 'starting') entry.error = '';
      if (msg.error) entry.error = msg.error;
      if (msg.state === 'stopped' && !store.tracksRequests) entry.inFlight = 0;
      notify('models');
      return;
    }
    case 'queue':
      store.queue = msg.queue || [];
      notify('models');
      return;
    case 'swap': return applySwap(msg);
    case 'request_start':
      store.tracksRequests = true;
      store.open.set(msg.id, { ...msg, chunks: 0, bytes: 0, rate: null, seenAt: Date.now() });
      recount();
      notify('activity');
      notify('models');
      return;
    case 'request_progress': {
      const open = store.open.get(msg.id);
      if (!open) return;
      const now = Date.now();
      const seconds = (now - open.seenAt) / 1000;
      if (seconds > 0.2) open.rate = Math.max(0, (msg.chunks - open.chunks) / seconds);
      open.chunks = msg.chunks;
      open.bytes = msg.bytes;
      open.seenAt = now;
      notify('activity');
      return;
    }
    case 'request': return applyRequest(msg);
    default:
  }
}

function applySnapshot(msg) {
  store.snapshotSeen = true;
  store.version = msg.version || '';
  const seen = new Set();
  for (const record of msg.models || []) {
    const entry = model(record.id);
    seen.add(record.id);
    if (entry.state !== record.state) entry.since = Date.now();
    entry.state = record.state;
    entry.name = record.name || '';
    entry.ttl = record.ttl ?? 0;
    entry.inFlight = record.in_flight ?? 0;
    if (record.state === 'ready' && !entry.lastActive && !entry.inFlight) entry.unknownIdle = true;
  }
  for (const id of [...store.models.keys()]) if (!seen.has(id)) store.models.delete(id);
  store.queue = msg.queue || [];
  store.resources = msg.resources || null;
  if (Array.isArray(msg.requests)) {
    store.tracksRequests = true;
    store.open = new Map(msg.requests.map((r) => [r.id, { ...r, chunks: 0, bytes: 0, rate: null, seenAt: Date.now() }]));
    recount();
  }
  notify('models');
  notify('activity');
}

function applySwap(msg) {
  if (msg.phase === 'start') {
    store.swaps.unshift({ model: msg.model, evict: msg.evict || [], startedAt: Date.now(), ok: null });
    if (store.swaps.length > MAX_SWAPS) store.swaps.length = MAX_SWAPS;
  } else {
    let swap = store.swaps.find((s) => s.model === msg.model && s.ok === null);
    if (!swap) {
      swap = { model: msg.model, evict: msg.evict || [], startedAt: Date.now() - (msg.duration_ms || 0) };
      store.swaps.unshift(swap);
    }
    swap.ok = Boolean(msg.ok);
    swap.durationMs = msg.duration_ms;
    swap.error = msg.error || '';
    if (msg.evict && msg.evict.length) swap.evict = msg.evict;
    if (swap.ok) {
      const entry = model(msg.model);
      entry.lastLoadMs = msg.duration_ms;
      entry.lastLoadAt = Date.now();
    }
    notify('models');
  }
  notify('swaps');
}

function applyRequest(msg) {
  const record = { ...msg, fresh: true };
  if (record.at === undefined) {
    const open = msg.id !== undefined ? store.open.get(msg.id) : undefined;
    record.at = open ? open.at : Date.now() / 1000 - (msg.duration_ms || 0) / 1000;
  }
  if (msg.id !== undefined) {
    store.open.delete(msg.id);
    const known = store.finished.findIndex((r) => r.id === msg.id);
    if (known >= 0) store.finished.splice(known, 1);
  }
  store.finished.unshift(record);
  if (store.finished.length > MAX_FINISHED) store.finished.length = MAX_FINISHED;
  const entry = model(msg.model);
  entry.lastActive = Date.now();
  entry.unknownIdle = false;
  if (store.tracksRequests) recount();
  else entry.inFlight = Math.max(0, entry.inFlight - 1);
  notify('activity');
  notify('models');
}

/** In flight per model from the open requests (when the daemon reports them). */
function recount() {
  const counts = new Map();
  for (const open of store.open.values()) counts.set(open.model, (counts.get(open.model) || 0) + 1);
  for (const entry of store.models.values()) entry.inFlight = counts.get(entry.id) || 0;
}

/** Merge the history of /api/activity (newest first) under what the feed already showed. */
export function setHistory(requests) {
  if (requests === null) {
    store.historyLoaded = null;
  } else {
    const byId = new Map();
    for (const r of store.finished) if (r.id !== undefined) byId.set(r.id, r);
    const merged = store.finished.filter((r) => r.id === undefined || !requests.some((h) => h.id === r.id));
    for (const r of requests) merged.push(byId.get(r.id) || r);
    merged.sort((a, b) => (b.at || 0) - (a.at || 0));
    store.finished = merged.slice(0, MAX_FINISHED);
    store.historyLoaded = true;
    for (const r of requests) {
      const entry = store.models.get(r.model);
      if (entry && r.load_ms > 0 && entry.lastLoadMs === undefined) entry.lastLoadMs = r.load_ms;
    }
  }
  notify('activity');
  notify('models');
}

/** Keep the /v1/models records; before the feed's first snapshot they also seed the models
 * (their state is in the list), so the Models view draws after one request, not three. */
export function setListed(records) {
  store.listed = records;
  if (!store.snapshotSeen) {
    for (const record of records) {
      if (kindOf(record) !== 'model' || store.models.has(record.id)) continue;
      const entry = model(record.id);
      entry.state = record.status?.state || 'stopped';
      entry.name = record.name || '';
      entry.unknownIdle = true;
    }
    notify('models');
  }
  notify('listed');
}

export function setProfiles(profiles) {
  store.profiles = profiles;
  notify('profiles');
}

export function queuedFor(id) {
  return store.queue.filter((q) => q.model === id).length;
}

/** What a /v1/models record is: a local 'model', an 'alias', a 'peer' model, a 'selector' or a
 * 'pin' of the active profile (SPEC 6.6 marks them in `meta`). */
export function kindOf(record) {
  const meta = record.meta || {};
  if (meta.alias_of) return 'alias';
  if (meta.peer || (record.owned_by && record.owned_by !== OWNER)) return 'peer';
  if (meta.selector) return 'selector';
  if (meta.pin_of) return 'pin';
  return 'model';
}

/** The /v1/models records that are not local models: selectors and peers' models by peer. */
export function remoteRecords() {
  const selectors = [];
  const peers = new Map();
  for (const record of store.listed) {
    const kind = kindOf(record);
    if (kind === 'selector') selectors.push(record);
    if (kind === 'peer') {
      const peer = record.meta?.peer || record.owned_by;
      if (!peers.has(peer)) peers.set(peer, []);
      peers.get(peer).push(record);
    }
  }
  return { selectors, peers };
}

/** The local model a requested name runs on (id, or an alias the list names), if we can tell. */
export function localModel(name) {
  if (store.models.has(name)) return store.models.get(name);
  for (const record of store.listed) {
    const aliases = record.meta?.aliases || [];
    if (aliases.includes(name) && store.models.has(record.id)) return store.models.get(record.id);
    if (record.id === name && record.meta?.alias_of) return store.models.get(record.meta.alias_of);
  }
  return undefined;
}

/** A selector's state as /v1/models would say it now: ready while a local target it would use
 * is ready or starting (`pin`: its first target only), from the live model states. */
export function selectorState(record) {
  const about = record.meta?.selector || {};
  const targets = Array.isArray(about.targets) ? about.targets : [];
  const candidates = about.strategy === 'pin' ? targets.slice(0, 1) : targets;
  const live = candidates.map(localModel).filter(Boolean);
  if (!live.length) return record.status?.state || 'stopped';
  return live.some((m) => m.state === 'ready' || m.state === 'starting') ? 'ready' : 'stopped';
}

/** GPU memory: {budget, used, size(id)} from the snapshot's sizes and the live states, or null
 * when the config has no memory settings. */
export function memory() {
  const res = store.resources;
  if (!res) return null;
  const sizes = res.sizes || {};
  let used = 0;
  for (const [id, [running, asleep]] of Object.entries(sizes)) {
    const state = store.models.get(id)?.state;
    if (!state || state === 'stopped' || state === 'shutdown') continue;
    used += state === 'sleeping' ? asleep : running;
  }
  return { budget: res.gpu_memory ?? null, used, size: (id) => sizes[id]?.[0] };
}

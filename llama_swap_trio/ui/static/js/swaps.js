// The Swaps view: each load the feed reported, with what it evicted and how long it took.
import { fmtMs, h } from './dom.js';
import { store } from './store.js';

const list = document.getElementById('swaps-list');
const empty = document.getElementById('swaps-empty');

function item(swap) {
  const status = swap.ok === null ? 'running' : swap.ok ? 'ok' : 'failed';
  const evicted = swap.evict.length
    ? h('span', { class: 'chips' }, h('span', { class: 'desc' }, 'evicted'),
      swap.evict.map((id) => h('span', { class: 'chip evict mono' }, id)))
    : h('span', { class: 'desc' }, 'evicted nothing');
  const took = swap.ok === null
    ? `loading… ${fmtMs(Date.now() - swap.startedAt)}`
    : `${swap.ok ? 'ready in' : 'failed after'} ${fmtMs(swap.durationMs)}`;
  return h('li', { class: `swap ${status}`, dataset: { model: swap.model, status } },
    h('span', { class: 'when' }, new Date(swap.startedAt).toLocaleTimeString([], { hour12: false })),
    h('span', { class: 'what' }, 'loaded ', h('span', { class: 'mono' }, swap.model)),
    evicted,
    h('span', { class: 'took' }, took),
    swap.error ? h('span', { class: 'err' }, swap.error) : null);
}

export function render() {
  list.replaceChildren(...store.swaps.map(item));
  empty.hidden = store.swaps.length !== 0;
}

export function tick() {
  if (store.swaps.some((s) => s.ok === null)) render();
}

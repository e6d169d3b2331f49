// Small DOM and formatting helpers shared by the views.

/** An element: h('button', {class: 'primary', onclick: f}, 'Load'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Set an element's text only when it changed (keeps selections and avoids layout work). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

export const DASH = '—';

/** Milliseconds, readable: 87 ms, 1.24 s, 2m 05s. */
export function fmtMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return fmtSeconds(ms / 1000);
}

/** Seconds as 45s, 4m 12s, 1h 03m. */
export function fmtSeconds(s) {
  if (s === undefined || s === null || Number.isNaN(s)) return DASH;
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Unix seconds as local HH:MM:SS. */
export function fmtClock(unixSeconds) {
  if (!unixSeconds) return DASH;
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

/** Bytes as 512 MiB, 7.5 GiB. */
export function fmtBytes(n) {
  if (n === undefined || n === null) return DASH;
  const gib = n / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(gib >= 10 ? 0 : 1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`;
}

export function fmtNumber(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return DASH;
  return Number(n).toFixed(digits);
}

/** A short-lived message in the corner (errors of buttons the user pressed). */
export function toast(message, { bad = false, ms = 6000 } = {}) {
  const box = document.getElementById('toasts');
  const item = h('div', { class: bad ? 'toast bad' : 'toast' }, message);
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

// The live feed (/api/events) over a websocket, reconnecting by itself with backoff.
import { wsUrl } from './api.js';

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;

/**
 * Keep a websocket to /api/events open.
 *
 * onMessage(msg) gets every feed message (a fresh `snapshot` first on each connection);
 * onStatus({state, retryIn}) gets 'live', 'retry' (with the delay in ms) or 'stopped'.
 * check() runs before each reconnection: it resolves when the daemon answers with our key,
 * and rejects to stop (the key was refused) or to retry later (the daemon is unreachable).
 */
export function connectFeed({ onMessage, onStatus, check, query = '' }) {
  let socket = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;

  function schedule() {
    if (stopped) return;
    const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4)); // jitter: not every tab at once
    attempt += 1;
    onStatus({ state: 'retry', retryIn: delay });
    timer = setTimeout(reconnect, delay);
  }

  async function reconnect() {
    timer = null;
    try {
      await check();
    } catch (error) {
      if (error && error.stopFeed) { stop(); return; }
      schedule();
      return;
    }
    open();
  }

  function open() {
    if (stopped) return;
    socket = new WebSocket(wsUrl('/api/events' + query));
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === 'snapshot') {
        attempt = 0;
        onStatus({ state: 'live' });
      }
      onMessage(message);
    };
    socket.onclose = () => {
      socket = null;
      schedule();
    };
  }

  function stop() {
    stopped = true;
    if (timer) clearTimeout(timer);
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    onStatus({ state: 'stopped' });
  }

  open();
  return { stop };
}

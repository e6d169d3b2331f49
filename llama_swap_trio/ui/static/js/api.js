// Talking to the daemon: the API key, fetch with it, and the errors a user should read.

const STORAGE = 'llama-swap-trio.api-key';
let apiKey = sessionStorage.getItem(STORAGE) || '';
const authListeners = new Set();

/** The daemon refused our key (401): the page asks for one again. */
export class AuthError extends Error {}

/** The daemon answered with an error (SPEC 3.3 shape when it is the proxy's own). */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() { return apiKey; }

export function setKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem(STORAGE, key);
  else sessionStorage.removeItem(STORAGE);
}

/** Call cb() whenever a request is refused with 401. */
export function onAuthFailure(cb) { authListeners.add(cb); }

// `credentials: 'omit'` on every call: the daemon's 401 carries `WWW-Authenticate: Basic`, which
// would make the browser show its own login box (and hold the fetch) if credentials were included;
// the page sends its key itself, as a header, and uses no cookies.
const NO_BROWSER_AUTH = { credentials: 'omit' };

export function authHeaders(extra = {}, key = apiKey) {
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** The message of an error answer: the OpenAI error's message, else the status line. */
export async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let code;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code;
    }
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, code);
}

/**
 * fetch() with the key. Returns the Response for `raw`, else the parsed JSON.
 * Throws AuthError on 401 (after telling the listeners), ApiError on another error status.
 */
export async function api(path, { method = 'GET', body, signal, raw = false, headers = {} } = {}) {
  const init = { ...NO_BROWSER_AUTH, method, signal, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    for (const cb of authListeners) cb();
    throw new AuthError('the daemon refused the API key');
  }
  if (!response.ok) throw await errorOf(response);
  if (raw) return response;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** GET that answers null when the daemon has no such endpoint (an older or smaller daemon). */
export async function optional(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return null;
    throw error;
  }
}

/** Whether `key` opens the daemon: the /v1/models body, 'refused' (401), or throws when the
 * daemon cannot be reached. */
export async function tryKey(key) {
  const response = await fetch('/v1/models', { ...NO_BROWSER_AUTH, headers: authHeaders({}, key) });
  if (response.status === 401) return 'refused';
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** ws(s):// URL of a path on this daemon, with ?api_key= (browsers cannot set its headers). */
export function wsUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = apiKey ? `${path.includes('?') ? '&' : '?'}api_key=${encodeURIComponent(apiKey)}` : '';
  return `${scheme}://${location.host}${path}${query}`;
}

/** The path of a model endpoint (ids may hold '/', kept as separators). */
export function modelPath(prefix, id) {
  return prefix + id.split('/').map(encodeURIComponent).join('/');
}

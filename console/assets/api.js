// The management API client (SPEC §5). Same origin only: every path is
// absolute from the server's root, no cookies go with a call, and the key
// is sent as a bearer token.

// APIError is a failed call, carrying what the API said about it: the
// console shows message and requestId for every error.
export class APIError extends Error {
  constructor(status, code, message, param, requestId) {
    super(message);
    this.name = 'APIError';
    this.status = status;
    this.code = code;
    this.param = param;
    this.requestId = requestId;
  }
}

// call sends one request with the API key and answers the parsed body, or
// throws an APIError.
export async function call(key, method, path, body) {
  const headers = { 'Authorization': 'Bearer ' + key, 'Accept': 'application/json' };
  const init = {
    method,
    headers,
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new APIError(0, 'network_error', 'The keygate server could not be reached.', null, null);
  }
  const headerID = res.headers.get('x-request-id');
  let data = null;
  const text = await res.text();
  if (text !== '') {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = data && typeof data.error === 'object' && data.error !== null ? data.error : {};
    const meta = data && typeof data.meta === 'object' && data.meta !== null ? data.meta : {};
    throw new APIError(
      res.status,
      typeof e.code === 'string' ? e.code : 'http_' + res.status,
      typeof e.message === 'string' && e.message !== '' ? e.message : 'The server answered HTTP ' + res.status + '.',
      typeof e.param === 'string' ? e.param : null,
      (typeof meta.request_id === 'string' && meta.request_id) || headerID || null,
    );
  }
  if (data === null) {
    throw new APIError(res.status, 'invalid_response', 'The server answered something other than JSON.', null, headerID);
  }
  return data;
}

// query builds "?a=b&…" from the set entries of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') {
      q.set(k, String(v));
    }
  }
  const s = q.toString();
  return s === '' ? '' : '?' + s;
}

// Client is the management API as the signed-in key sees it.
export class Client {
  constructor(key) {
    this.key = key;
  }

  whoami() {
    return call(this.key, 'GET', '/v1/whoami');
  }

  listKeys({ status, cursor, limit }) {
    return call(this.key, 'GET', '/v1/api-keys' + query({ status, cursor, limit }));
  }

  getKey(id) {
    return call(this.key, 'GET', '/v1/api-keys/' + encodeURIComponent(id));
  }

  createKey(body) {
    return call(this.key, 'POST', '/v1/api-keys', body);
  }

  updateKey(id, body) {
    return call(this.key, 'PATCH', '/v1/api-keys/' + encodeURIComponent(id), body);
  }

  revokeKey(id) {
    return call(this.key, 'DELETE', '/v1/api-keys/' + encodeURIComponent(id));
  }

  rollKey(id, graceSeconds) {
    return call(this.key, 'POST', '/v1/api-keys/' + encodeURIComponent(id) + '/roll', { grace_seconds: graceSeconds });
  }

  listAuditEvents({ cursor, limit }) {
    return call(this.key, 'GET', '/v1/audit-events' + query({ cursor, limit }));
  }
}

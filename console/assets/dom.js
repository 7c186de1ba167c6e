// DOM helpers. Everything the API returns is rendered as text: elements
// are built with createElement and filled with textContent, never parsed
// from a string, so a key named "<img src=x>" is a name, not an image.

// el builds an element with properties (attributes for names with a dash,
// like aria-label or data-key-id) and children (nodes or strings, which
// become text).
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k === 'class') {
      e.className = v;
    } else if (k.includes('-')) {
      e.setAttribute(k, v === true ? '' : String(v));
    } else {
      e[k] = v;
    }
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) {
      continue;
    }
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

// $ is document.getElementById.
export function $(id) {
  const e = document.getElementById(id);
  if (e === null) {
    throw new Error('console: no element #' + id);
  }
  return e;
}

// clear removes every child of e.
export function clear(e) {
  e.replaceChildren();
}

// formatTime renders an RFC 3339 timestamp (or null) as a <time> element in
// UTC (the column headers say so), minutes precision, the full value in its
// title. Date and time are spans, so that a narrow column breaks the line
// between them and nowhere else.
export function formatTime(iso, none = 'never') {
  if (iso === null || iso === undefined || iso === '') {
    return el('span', { class: 'muted' }, none);
  }
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    return el('span', {}, String(iso));
  }
  const s = d.toISOString();
  return el('time', { dateTime: s, title: s }, el('span', {}, s.slice(0, 10)), ' ', el('span', {}, s.slice(11, 16)));
}

// toLocalInput turns an RFC 3339 timestamp into a datetime-local value.
export function toLocalInput(iso) {
  if (!iso) {
    return '';
  }
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    return '';
  }
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) +
    'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}

// fromLocalInput turns a datetime-local value into RFC 3339 (UTC), or null
// when empty; it throws on a value the browser did not validate.
export function fromLocalInput(v) {
  if (v === '') {
    return null;
  }
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) {
    throw new Error('not a date');
  }
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// showError fills box with an error's message and, when the API gave one,
// its request id (what an operator greps the logs and the audit trail for).
export function showError(box, err) {
  clear(box);
  const message = err && err.message ? err.message : String(err);
  box.append(el('p', { class: 'error-message' }, message));
  if (err && err.requestId) {
    box.append(el('p', { class: 'error-meta' }, 'Request id: ', el('code', { class: 'request-id' }, err.requestId)));
  }
  if (err && err.code && err.status) {
    box.append(el('p', { class: 'error-meta' }, 'Code: ', el('code', { class: 'error-code' }, err.code), ' (HTTP ' + err.status + ')'));
  }
  box.hidden = false;
}

// hideError empties and hides box.
export function hideError(box) {
  clear(box);
  box.hidden = true;
}

// parseMetadata reads a metadata textarea: empty is undefined (not sent),
// otherwise it must be a JSON object. The API has the last word (its 4 KiB
// limit, for one); this only catches typing mistakes early.
export function parseMetadata(text) {
  const t = text.trim();
  if (t === '') {
    return undefined;
  }
  let v;
  try {
    v = JSON.parse(t);
  } catch (e) {
    throw new Error('Metadata is not valid JSON: ' + e.message);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error('Metadata must be a JSON object, like {"plan": "pro"}.');
  }
  return v;
}

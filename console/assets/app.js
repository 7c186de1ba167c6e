// keygate console: sign in with an API key, then manage keys and read the
// audit trail through the management API. The key lives in sessionStorage
// (this tab only, gone when it closes); a new key's token lives only in the
// reveal panel and one variable, both cleared when the panel closes.

import { APIError, Client } from './api.js';
import { $, clear, el, formatTime, fromLocalInput, hideError, parseMetadata, showError, toLocalInput } from './dom.js';
import { UsageView, spark } from './usage.js';
import { LimitsEditor, refillText, usageLimited, usesLeft } from './limits.js';

const SESSION_KEY = 'keygate.console.key';
const PAGE_SIZE = 20;

const state = {
  client: null, // Client of the signed-in key
  me: null, // the signed-in key's object (whoami)
  keys: new Map(), // id -> key object, of the rows shown
  keysCursor: null,
  keysGeneration: 0, // a reload makes answers to older loads stale
  auditCursor: null,
  auditGeneration: 0,
  view: 'signin',
};

// The token shown in the reveal panel, and what gets focus back when the
// panel closes. Nothing else ever holds a new token.
let revealed = null;
let revealReturn = null;

function hasScope(scope) {
  return state.me !== null && Array.isArray(state.me.scopes) && state.me.scopes.includes(scope);
}

// ---- views ----

function showView(view) {
  state.view = view;
  $('signin-view').hidden = view !== 'signin';
  $('keys-view').hidden = view !== 'keys';
  $('audit-view').hidden = view !== 'audit';
  $('usage-view').hidden = view !== 'usage';
  $('nav').hidden = view === 'signin';
  $('whoami').hidden = view === 'signin';
  for (const [id, v] of [['nav-keys', 'keys'], ['nav-audit', 'audit']]) {
    if (v === view) {
      $(id).setAttribute('aria-current', 'page');
    } else {
      $(id).removeAttribute('aria-current');
    }
  }
  hideError($('error'));
}

function renderWhoami() {
  const k = state.me;
  $('whoami-org').textContent = k.org_id;
  $('whoami-user').textContent = k.user_id;
  $('whoami-scopes').textContent = (k.scopes || []).join(', ') || 'none';
  $('whoami-key').textContent = k.prefix + '…' + k.last4 + ' (' + k.environment + ')';
  $('nav-audit').hidden = !hasScope('admin');
  $('new-key').hidden = !hasScope('write');
}

// ---- sign-in and sign-out ----

async function signIn(key) {
  const client = new Client(key);
  const res = await client.whoami();
  state.client = client;
  state.me = res.data;
  sessionStorage.setItem(SESSION_KEY, key);
  renderWhoami();
  showView('keys');
  await loadKeys(true);
}

// signOut forgets the key. With err, the sign-in view says why (the key
// was revoked, say).
function signOut(err) {
  sessionStorage.removeItem(SESSION_KEY);
  state.client = null;
  state.me = null;
  state.keys.clear();
  state.keysGeneration++;
  state.auditGeneration++;
  for (const d of document.querySelectorAll('dialog[open]')) {
    d.close();
  }
  clear($('keys-body'));
  clear($('audit-body'));
  for (const id of ['whoami-org', 'whoami-user', 'whoami-scopes', 'whoami-key']) {
    $(id).textContent = '';
  }
  showView('signin');
  if (err) {
    showError($('signin-error'), err);
  } else {
    hideError($('signin-error'));
  }
  $('signin-key').focus();
}

// guard runs an API action; an error shows in box, except a 401: the key
// no longer works (revoked, expired, deactivated), so the session ends.
async function guard(box, fn) {
  hideError(box);
  try {
    await fn();
    return true;
  } catch (err) {
    if (err instanceof APIError && err.status === 401 && state.client !== null) {
      signOut(err);
    } else {
      showError(box, err);
    }
    return false;
  }
}

// ---- keys table ----

function keyLabel(k) {
  return k.prefix + '…' + k.last4;
}

function actionButton(action, label, k, cls) {
  return el('button', {
    type: 'button',
    id: action + '-' + k.id,
    class: cls || 'small secondary',
    'data-action': action,
    'data-key-id': k.id,
    'aria-label': label + ' ' + k.name,
  }, label);
}

// keyRow is one key's row. The key column holds the name and, under it,
// the token's label, and the actions sit two by two: the table then fits
// a 1280-pixel screen without scrolling sideways.
function keyRow(k) {
  const name = el('td', { class: 'name' }, el('span', {}, k.name));
  if (state.me !== null && k.id === state.me.id) {
    name.append(' ', el('span', { class: 'badge' }, 'this session'));
  }
  name.append(el('code', { class: 'prefix' }, keyLabel(k)));
  const buttons = el('div', { class: 'row-buttons' });
  if (hasScope('write')) {
    buttons.append(actionButton('edit', 'Edit', k), actionButton('roll', 'Roll', k));
    if (k.status === 'active') {
      buttons.append(actionButton('toggle', 'Deactivate', k));
    } else if (k.status === 'inactive') {
      buttons.append(actionButton('toggle', 'Activate', k));
    }
    buttons.append(actionButton('revoke', 'Revoke', k, 'small danger'));
  }
  const actions = el('td', { class: 'row-actions' }, buttons);
  const projects = k.project_ids && k.project_ids.length > 0 ? k.project_ids.join(', ') : 'all';
  const sources = k.allowed_sources && k.allowed_sources.length > 0 ? k.allowed_sources.join(', ') : 'anywhere';
  return el('tr', { 'data-key-id': k.id, 'data-status': k.status },
    name,
    el('td', { class: 'user' }, k.user_id),
    el('td', {}, k.type),
    el('td', {}, k.environment),
    el('td', { class: 'scopes' }, (k.scopes || []).join(', ') || 'none'),
    el('td', {}, projects),
    el('td', { class: 'sources' }, sources),
    statusCell(k),
    el('td', {}, formatTime(k.created_at)),
    el('td', { class: 'last-used' }, formatTime(k.last_used_at), spark(state.client.key, k)),
    el('td', {}, formatTime(k.expires_at)),
    actions,
  );
}

// statusCell is a key's status and, for a usage-limited key, its uses
// left in small type under it (the refill in its title). A long count
// breaks the line before "uses left", never inside itself, so the column
// stays as narrow as the table needs to fit a 1280-pixel screen.
function statusCell(k) {
  const td = el('td', { class: 'status-cell' }, el('span', { class: 'status status-' + k.status }, k.status));
  if (usageLimited(k)) {
    const words = usesLeft(k);
    const n = words.indexOf(' use');
    td.append(el('span', {
      class: k.remaining === 0 ? 'uses exhausted' : 'uses',
      'data-remaining': String(k.remaining),
      title: words + (k.refill ? '; refills ' + refillText(k.refill) : '; no refill'),
    }, el('span', {}, words.slice(0, n)), ' ', el('span', {}, words.slice(n + 1))));
  }
  return td;
}

function rowOf(id) {
  for (const tr of $('keys-body').children) {
    if (tr.dataset.keyId === id) {
      return tr;
    }
  }
  return null;
}

function putRow(k, { prepend = false } = {}) {
  state.keys.set(k.id, k);
  const old = rowOf(k.id);
  const tr = keyRow(k);
  if (old !== null) {
    old.replaceWith(tr);
  } else if (prepend) {
    $('keys-body').prepend(tr);
  } else {
    $('keys-body').append(tr);
  }
  $('keys-empty').hidden = true;
}

function removeRow(id) {
  state.keys.delete(id);
  const tr = rowOf(id);
  let next = null;
  if (tr !== null) {
    next = tr.nextElementSibling || tr.previousElementSibling;
    tr.remove();
  }
  $('keys-empty').hidden = $('keys-body').children.length > 0;
  return next;
}

async function loadKeys(reset) {
  const generation = reset ? ++state.keysGeneration : state.keysGeneration;
  const box = $('error');
  return guard(box, async () => {
    const res = await state.client.listKeys({
      status: $('status-filter').value,
      cursor: reset ? undefined : state.keysCursor,
      limit: PAGE_SIZE,
    });
    if (generation !== state.keysGeneration) {
      return; // a newer load (another filter, a sign-out) owns the table
    }
    if (reset) {
      state.keys.clear();
      clear($('keys-body'));
    }
    const first = $('keys-body').children.length;
    for (const k of res.data || []) {
      putRow(k);
    }
    state.keysCursor = res.next_cursor || null;
    $('keys-more').hidden = state.keysCursor === null;
    $('keys-empty').hidden = $('keys-body').children.length > 0;
    if (!reset && state.keysCursor === null) {
      // "Load more" is gone: focus the first row it brought.
      const tr = $('keys-body').children[first];
      focusInRow(tr) || $('keys-title').focus();
    }
  });
}

function focusInRow(tr) {
  const b = tr ? tr.querySelector('button') : null;
  if (b) {
    b.focus();
    return true;
  }
  return false;
}

// focusBack puts focus on the element with id, or, when it is gone (the
// row was revoked), on fallback or the view's heading.
function focusBack(id, fallback) {
  const e = id ? document.getElementById(id) : null;
  if (e !== null && !e.hidden && e.isConnected) {
    e.focus();
  } else if (!focusInRow(fallback)) {
    $(state.view === 'audit' ? 'audit-title' : 'keys-title').focus();
  }
}

// returnTo is, per open dialog, where focus goes when it closes: the id
// of the control that opened it, or a row when that control is gone.
const returnTo = new Map();

function openDialog(id, backID) {
  returnTo.set(id, { id: backID, fallback: null });
  $(id).showModal();
}

// ---- reveal panel ----

function openReveal(k, token, returnTo) {
  revealed = token;
  revealReturn = returnTo;
  $('reveal-name').textContent = k.name;
  $('reveal-key-id').textContent = k.id;
  $('reveal-token').textContent = token;
  $('reveal-status').textContent = '';
  $('reveal-dialog').showModal();
  $('reveal-copy').focus(); // the panel has focus: its first action
}

// forgetToken drops the token from the panel and the variable. It runs
// the moment the panel is dismissed (its button, Escape), before the
// close event, which a browser fires a task later.
function forgetToken() {
  revealed = null;
  const node = $('reveal-token');
  const sel = window.getSelection();
  if (sel !== null && sel.rangeCount > 0 && node.contains(sel.anchorNode)) {
    sel.removeAllRanges();
  }
  clear(node);
  $('reveal-status').textContent = '';
}

// revealClosed runs on every close of the panel: focus goes back to what
// opened it.
function revealClosed() {
  forgetToken();
  const back = revealReturn;
  revealReturn = null;
  if (state.client !== null) {
    focusBack(back);
  }
}

function selectToken() {
  const range = document.createRange();
  range.selectNodeContents($('reveal-token'));
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

async function copyToken() {
  if (revealed === null) {
    return;
  }
  // The clipboard API exists only in secure contexts (HTTPS, localhost);
  // elsewhere, and when the browser refuses, select the text for Ctrl+C.
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
    try {
      await navigator.clipboard.writeText(revealed);
      $('reveal-status').textContent = 'Copied to the clipboard.';
      return;
    } catch {
      // fall back to selecting
    }
  }
  selectToken();
  $('reveal-status').textContent = 'The key is selected: press Ctrl+C (⌘C on a Mac) to copy it.';
}

// ---- create ----

function openCreate() {
  const form = $('create-form');
  form.reset();
  hideError($('create-error'));
  clearFieldErrors(form);
  // The named limits start as the caller's: what the key gets when the
  // rows are left as they are (then rate_limits is not sent at all).
  limitsEditors.create.set(state.me.rate_limits || []);
  // Every scope of the caller is offered; all but admin are ticked, so
  // "Create" never mints an admin key unless admin was chosen.
  const list = $('create-scopes-list');
  clear(list);
  for (const s of state.me.scopes || []) {
    const id = 'create-scope-' + s.replace(/[^a-z0-9_-]/g, '_');
    list.append(el('span', { class: 'check' },
      el('input', { type: 'checkbox', id, name: 'scope', value: s, checked: s !== 'admin' }),
      el('label', { htmlFor: id }, s)));
  }
  $('create-scopes-hint').hidden = !hasScope('admin');
  const env = $('create-env');
  clear(env);
  env.append(el('option', { value: state.me.environment }, state.me.environment));
  $('create-expires-at-wrap').hidden = true;
  $('create-user-wrap').hidden = !hasScope('admin');
  openDialog('create-dialog', 'new-key');
  $('create-name').focus();
}

// anchorOf is what a field's message goes after: the field's hint (of
// the pair of controls it is in, for a refill), or the control itself.
function anchorOf(id) {
  const e = $(id);
  const box = e.closest('.pair') || e;
  const hint = document.getElementById(id + '-hint');
  if (hint !== null) {
    return hint;
  }
  const next = box.nextElementSibling;
  return next !== null && next.classList.contains('hint') ? next : box;
}

// fieldError shows message under a field: each of controls gets
// aria-invalid and points at the message (aria-describedby), which goes
// after the first control's anchor.
function fieldError(controls, message) {
  const id = controls[0] + '-error';
  let p = document.getElementById(id);
  if (p === null) {
    p = el('p', { id, class: 'field-error' });
    anchorOf(controls[0]).after(p);
  }
  p.textContent = message;
  for (const c of controls) {
    const e = $(c);
    e.setAttribute('aria-invalid', 'true');
    const ids = (e.getAttribute('aria-describedby') || '').split(' ').filter((s) => s !== '' && s !== id);
    e.setAttribute('aria-describedby', [...ids, id].join(' '));
  }
}

// clearFieldErrors undoes every fieldError in form.
function clearFieldErrors(form) {
  for (const p of form.querySelectorAll('.field-error')) {
    for (const e of form.querySelectorAll('[aria-describedby~="' + p.id + '"]')) {
      const ids = e.getAttribute('aria-describedby').split(' ').filter((s) => s !== '' && s !== p.id);
      if (ids.length > 0) {
        e.setAttribute('aria-describedby', ids.join(' '));
      } else {
        e.removeAttribute('aria-describedby');
      }
    }
    p.remove();
  }
  for (const e of form.querySelectorAll('[aria-invalid]')) {
    e.removeAttribute('aria-invalid');
  }
}

// paramFields maps the API's error params to the controls that set them
// (their ids after the form's prefix).
const paramFields = new Map([
  ['name', ['name']],
  ['scopes', ['scopes']],
  ['project_ids', ['projects']],
  ['expires_in', ['expiry']],
  ['expires_at', ['expires-at']],
  ['rate_limit_per_minute', ['rate']],
  ['user_id', ['user']],
  ['allowed_sources', ['sources']],
  ['metadata', ['metadata']],
  ['remaining', ['remaining']],
  ['refill.interval', ['refill-interval']],
  ['refill.amount', ['refill-amount']],
  ['refill', ['refill-amount', 'refill-interval']], // a refill beyond the caller's
]);

// limitsEditors are the create and edit forms' named rate limits.
const limitsEditors = {};

// fieldOf lists the controls of a form that an error's param names, or
// null (the error box alone shows it). prefix is the form's ("create",
// "edit"). rate_limits[i].name and the like name a field of the row sent
// as item i, rate_limits the whole editor.
function fieldOf(prefix, param) {
  const m = /^rate_limits(?:\[(\d+)\](?:\.([a-z_]+))?)?$/.exec(param);
  const ids = m !== null ? limitsEditors[prefix].controlsFor(m[1], m[2]) || [] :
    (paramFields.get(param) || []).map((n) => prefix + '-' + n);
  if (ids.length === 0 || ids.some((id) => document.getElementById(id) === null)) {
    return null;
  }
  // A hidden control cannot show its error (the create form's expiry
  // date, unless "On a date…" is picked).
  if (ids.some((id) => !document.getElementById(id).checkVisibility())) {
    return null;
  }
  return ids;
}

// markParam shows an API error next to the field its param names (a 400
// invalid_request, or a 403 naming what is beyond the caller) and puts
// focus there; the error box keeps the message, code and request id.
function markParam(prefix, err) {
  if (!(err instanceof APIError) || err.param === null) {
    return;
  }
  const controls = fieldOf(prefix, err.param);
  if (controls === null) {
    return;
  }
  fieldError(controls, err.message);
  $(controls[0]).focus();
}

// invalid marks a field, with the message under it, and throws the
// message for the form's error box.
function invalid(id, message) {
  fieldError([id], message);
  $(id).focus();
  throw new Error(message);
}

function integerField(id, label) {
  const v = $(id).value.trim();
  if (v === '') {
    return null;
  }
  if (!/^\d+$/.test(v)) {
    invalid(id, label + ' must be a whole number, 0 or more.');
  }
  return Number(v);
}

// refillField reads a form's refill (prefix "create" or "edit"): null
// when neither its interval nor its amount is given, otherwise both.
function refillField(prefix) {
  const interval = $(prefix + '-refill-interval').value;
  const amount = integerField(prefix + '-refill-amount', 'The refill amount');
  if (interval === '' && amount === null) {
    return null;
  }
  if (interval === '') {
    invalid(prefix + '-refill-interval', 'Pick when the refill happens: daily or monthly.');
  }
  if (amount === null) {
    invalid(prefix + '-refill-amount', 'Give the number of uses the refill sets.');
  }
  return { interval, amount };
}

function metadataField(id) {
  try {
    return parseMetadata($(id).value);
  } catch (e) {
    return invalid(id, e.message);
  }
}

// sourcesField reads a list of allowed sources: CIDRs, addresses or
// SPIFFE IDs separated by commas or spaces. The server validates them.
function sourcesField(id) {
  return $(id).value.split(/[\s,]+/).filter((s) => s !== '');
}

function createBody() {
  clearFieldErrors($('create-form'));
  const name = $('create-name').value.trim();
  if (name === '') {
    invalid('create-name', 'A name is required.');
  }
  const body = { name };
  body.scopes = [...$('create-scopes-list').querySelectorAll('input[type=checkbox]')]
    .filter((c) => c.checked).map((c) => c.value);
  const projects = $('create-projects').value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (projects.length > 0) {
    body.project_ids = projects;
  }
  body.type = $('create-type').value;
  body.environment = $('create-env').value;
  const expiry = $('create-expiry').value;
  if (expiry === 'date') {
    let at = null;
    try {
      at = fromLocalInput($('create-expires-at').value);
    } catch {
      at = null;
    }
    if (at === null) {
      invalid('create-expires-at', 'Pick the expiry date and time.');
    }
    body.expires_at = at;
  } else if (expiry !== '') {
    body.expires_in = Number(expiry);
  }
  const rate = integerField('create-rate', 'The rate limit');
  if (rate !== null) {
    body.rate_limit_per_minute = rate;
  }
  const user = $('create-user').value.trim();
  if (hasScope('admin') && user !== '') {
    body.user_id = user;
  }
  const sources = sourcesField('create-sources');
  if (sources.length > 0) {
    body.allowed_sources = sources;
  }
  const remaining = integerField('create-remaining', 'Uses');
  if (remaining !== null) {
    body.remaining = remaining;
  }
  const refill = refillField('create');
  if (refill !== null) {
    body.refill = refill;
  }
  if (limitsEditors.create.changed()) {
    body.rate_limits = limitsEditors.create.read(invalid);
  }
  const metadata = metadataField('create-metadata');
  if (metadata !== undefined) {
    body.metadata = metadata;
  }
  return body;
}

async function submitCreate() {
  const box = $('create-error');
  let body;
  try {
    body = createBody();
  } catch (e) {
    showError(box, e);
    return;
  }
  await busy('create-submit', () => guard(box, async () => {
    const res = await state.client.createKey(body).catch((err) => {
      markParam('create', err);
      throw err;
    });
    const { key: token, ...k } = res.data;
    const filter = $('status-filter').value;
    if (filter === '' || filter === k.status) {
      putRow(k, { prepend: true });
    }
    $('create-dialog').close();
    openReveal(k, token, 'new-key');
  }));
}

// busy disables a button while fn runs, so a double click sends one call.
async function busy(id, fn) {
  const b = $(id);
  b.disabled = true;
  try {
    return await fn();
  } finally {
    b.disabled = false;
  }
}

// ---- row actions ----

let current = null; // the key a dialog acts on, and the button that opened it

function openRoll(k, opener) {
  current = { key: k, opener };
  $('roll-form').reset();
  hideError($('roll-error'));
  $('roll-name').textContent = k.name;
  $('roll-prefix').textContent = keyLabel(k);
  openDialog('roll-dialog', opener);
  $('roll-grace').focus();
}

async function submitRoll() {
  const { key: k, opener } = current;
  const grace = Number($('roll-grace').value);
  await busy('roll-submit', () => guard($('roll-error'), async () => {
    const res = await state.client.rollKey(k.id, grace);
    const { key: token, ...rolled } = res.data;
    putRow(rolled);
    current = null;
    $('roll-dialog').close();
    openReveal(rolled, token, opener);
  }));
}

function openRevoke(k, opener) {
  current = { key: k, opener };
  hideError($('revoke-error'));
  $('revoke-name').textContent = k.name;
  $('revoke-prefix').textContent = keyLabel(k);
  openDialog('revoke-dialog', opener);
  $('revoke-cancel').focus(); // the safe choice first
}

async function submitRevoke() {
  const { key: k } = current;
  await busy('revoke-submit', () => guard($('revoke-error'), async () => {
    await state.client.revokeKey(k.id);
    current = null;
    const next = removeRow(k.id);
    returnTo.set('revoke-dialog', { id: null, fallback: next });
    $('revoke-dialog').close();
    if (state.me !== null && k.id === state.me.id) {
      signOut(new Error('You revoked the key this session was signed in with.'));
    }
  }));
}

async function toggleActive(k, opener) {
  await guard($('error'), async () => {
    const res = await state.client.updateKey(k.id, { active: k.status !== 'active' });
    putRow(res.data);
    focusBack(opener);
  });
}

let editInitial = null;

function openEdit(k, opener) {
  current = { key: k, opener };
  $('edit-form').reset();
  hideError($('edit-error'));
  clearFieldErrors($('edit-form'));
  $('edit-title').textContent = 'Edit ' + k.name;
  $('edit-name').value = k.name;
  $('edit-rate').value = k.rate_limit_per_minute === null || k.rate_limit_per_minute === undefined ? '' : String(k.rate_limit_per_minute);
  $('edit-expires-at').value = toLocalInput(k.expires_at);
  $('edit-metadata').value = JSON.stringify(k.metadata || {}, null, 2);
  $('edit-sources').value = (k.allowed_sources || []).join(', ');
  $('edit-remaining').value = usageLimited(k) ? String(k.remaining) : '';
  $('edit-refill-interval').value = k.refill ? k.refill.interval : '';
  $('edit-refill-amount').value = k.refill ? String(k.refill.amount) : '';
  limitsEditors.edit.set(k.rate_limits || []);
  editInitial = {
    remaining: $('edit-remaining').value,
    refill: $('edit-refill-interval').value + ':' + $('edit-refill-amount').value,
    sources: $('edit-sources').value,
    name: $('edit-name').value,
    rate: $('edit-rate').value,
    expires: $('edit-expires-at').value,
    metadata: $('edit-metadata').value,
  };
  openDialog('edit-dialog', opener);
  $('edit-name').focus();
}

// editBody sends only what was changed, so an edit of the name cannot
// reset an expiry that the form shows to the second only.
function editBody() {
  clearFieldErrors($('edit-form'));
  const body = {};
  const name = $('edit-name').value;
  if (name !== editInitial.name) {
    if (name.trim() === '') {
      invalid('edit-name', 'A name is required.');
    }
    body.name = name.trim();
  }
  if ($('edit-rate').value !== editInitial.rate) {
    body.rate_limit_per_minute = integerField('edit-rate', 'The rate limit');
  }
  const expires = $('edit-expires-at').value;
  if (expires !== editInitial.expires) {
    try {
      body.expires_at = fromLocalInput(expires);
    } catch {
      invalid('edit-expires-at', 'The expiry is not a date.');
    }
  }
  if ($('edit-remaining').value !== editInitial.remaining) {
    body.remaining = integerField('edit-remaining', 'Uses left'); // empty: null, unlimited
  }
  if ($('edit-refill-interval').value + ':' + $('edit-refill-amount').value !== editInitial.refill) {
    body.refill = refillField('edit'); // none: null, no refill
  }
  if (limitsEditors.edit.changed()) {
    body.rate_limits = limitsEditors.edit.read(invalid); // all rows removed: [], none
  }
  if ($('edit-sources').value !== editInitial.sources) {
    body.allowed_sources = sourcesField('edit-sources');
  }
  if ($('edit-metadata').value !== editInitial.metadata) {
    const m = metadataField('edit-metadata');
    body.metadata = m === undefined ? {} : m;
  }
  return body;
}

async function submitEdit() {
  const { key: k } = current;
  const box = $('edit-error');
  let body;
  try {
    body = editBody();
  } catch (e) {
    showError(box, e);
    return;
  }
  if (Object.keys(body).length === 0) {
    $('edit-dialog').close();
    return;
  }
  await busy('edit-submit', () => guard(box, async () => {
    const res = await state.client.updateKey(k.id, body).catch((err) => {
      markParam('edit', err);
      throw err;
    });
    putRow(res.data);
    if (state.me !== null && res.data.id === state.me.id) {
      state.me = { ...state.me, ...res.data };
      renderWhoami();
    }
    current = null;
    $('edit-dialog').close();
  }));
}

// ---- usage ----

let usageView = null;
let usageOpener = null;

async function openUsage(k, opener) {
  usageOpener = opener;
  showView('usage');
  $('usage-title').focus();
  await guard($('error'), async () => {
    // The row's copy of the key may be old (its uses left, above all):
    // the view shows it at once and the key as the API has it now as soon
    // as it answers.
    const fresh = state.client.getKey(k.id).then((res) => {
      if (usageView.key !== null && usageView.key.id === k.id) {
        usageView.setKey(res.data);
      }
      const shown = state.keys.get(k.id);
      if (shown !== undefined && (shown.remaining !== res.data.remaining || shown.status !== res.data.status)) {
        putRow(res.data);
      }
    }, () => {}); // a key revoked since keeps its usage, and the row's copy
    await usageView.open(state.client.key, k, (err) => guard($('error'), () => Promise.reject(err)));
    await fresh;
  });
}

// ---- audit trail ----

function auditRow(ev) {
  const dash = () => el('span', { class: 'muted' }, '—');
  return el('tr', { 'data-event-id': ev.id, 'data-action': ev.action },
    el('td', {}, formatTime(ev.created_at)),
    el('td', {}, el('code', {}, ev.action)),
    el('td', {}, ev.key_id ? el('code', {}, ev.key_id) : dash()),
    el('td', {}, ev.actor_key_id ? el('code', {}, ev.actor_key_id) : el('span', { class: 'muted' }, 'CLI')),
    el('td', {}, ev.request_id ? el('code', {}, ev.request_id) : dash()),
  );
}

async function loadAudit(reset) {
  const generation = reset ? ++state.auditGeneration : state.auditGeneration;
  return guard($('error'), async () => {
    const res = await state.client.listAuditEvents({ cursor: reset ? undefined : state.auditCursor, limit: PAGE_SIZE });
    if (generation !== state.auditGeneration) {
      return;
    }
    if (reset) {
      clear($('audit-body'));
    }
    for (const ev of res.data || []) {
      $('audit-body').append(auditRow(ev));
    }
    state.auditCursor = res.next_cursor || null;
    $('audit-more').hidden = state.auditCursor === null;
    $('audit-empty').hidden = $('audit-body').children.length > 0;
    if (!reset && state.auditCursor === null) {
      $('audit-title').focus();
    }
  });
}

// ---- wiring ----

function onSubmit(id, fn) {
  $(id).addEventListener('submit', (ev) => {
    ev.preventDefault(); // nothing is ever submitted by the browser itself
    fn();
  });
}

function wire() {
  onSubmit('signin-form', async () => {
    const input = $('signin-key');
    const key = input.value.trim();
    if (key === '') {
      showError($('signin-error'), new Error('Paste an API key.'));
      input.focus();
      return;
    }
    hideError($('signin-error'));
    await busy('signin-submit', async () => {
      try {
        await signIn(key);
        input.value = '';
        $('keys-title').focus();
      } catch (err) {
        state.client = null;
        state.me = null;
        sessionStorage.removeItem(SESSION_KEY);
        showError($('signin-error'), err);
        input.focus();
      }
    });
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('nav-keys').addEventListener('click', () => {
    showView('keys');
    $('keys-title').focus();
  });
  $('nav-audit').addEventListener('click', async () => {
    showView('audit');
    $('audit-title').focus();
    await loadAudit(true);
  });

  $('status-filter').addEventListener('change', () => loadKeys(true));
  $('keys-refresh').addEventListener('click', () => loadKeys(true));
  $('keys-more').addEventListener('click', () => loadKeys(false));
  $('audit-refresh').addEventListener('click', () => loadAudit(true));
  $('audit-more').addEventListener('click', () => loadAudit(false));
  $('new-key').addEventListener('click', openCreate);
  usageView = new UsageView($);
  limitsEditors.create = new LimitsEditor('create', $);
  limitsEditors.edit = new LimitsEditor('edit', $);
  $('usage-back').addEventListener('click', () => {
    showView('keys');
    focusBack(usageOpener);
  });

  $('keys-body').addEventListener('click', (ev) => {
    const b = ev.target instanceof Element ? ev.target.closest('button[data-action]') : null;
    if (b === null) {
      return;
    }
    const k = state.keys.get(b.dataset.keyId);
    if (k === undefined) {
      return;
    }
    switch (b.dataset.action) {
      case 'edit': openEdit(k, b.id); break;
      case 'roll': openRoll(k, b.id); break;
      case 'toggle': toggleActive(k, b.id); break;
      case 'revoke': openRevoke(k, b.id); break;
      case 'usage': openUsage(k, b.id); break;
    }
  });

  $('create-expiry').addEventListener('change', () => {
    $('create-expires-at-wrap').hidden = $('create-expiry').value !== 'date';
  });
  onSubmit('create-form', submitCreate);
  onSubmit('roll-form', submitRoll);
  onSubmit('revoke-form', submitRevoke);
  onSubmit('edit-form', submitEdit);

  // Closing a dialog (its Cancel, Escape, or done) gives focus back to
  // what opened it, unless another dialog took over (create -> reveal).
  for (const [dialog, cancel] of [
    ['create-dialog', 'create-cancel'],
    ['roll-dialog', 'roll-cancel'],
    ['revoke-dialog', 'revoke-cancel'],
    ['edit-dialog', 'edit-cancel'],
  ]) {
    $(cancel).addEventListener('click', () => $(dialog).close());
    $(dialog).addEventListener('close', () => {
      const back = returnTo.get(dialog);
      returnTo.delete(dialog);
      if (back && state.client !== null && document.querySelector('dialog[open]') === null) {
        focusBack(back.id, back.fallback);
      }
    });
  }

  $('reveal-copy').addEventListener('click', copyToken);
  $('reveal-close').addEventListener('click', () => {
    forgetToken();
    $('reveal-dialog').close();
  });
  $('reveal-dialog').addEventListener('cancel', forgetToken);
  $('reveal-dialog').addEventListener('close', revealClosed);
}

async function start() {
  wire();
  const key = sessionStorage.getItem(SESSION_KEY);
  if (key === null) {
    showView('signin');
    $('signin-key').focus();
    return;
  }
  try {
    await signIn(key);
  } catch (err) {
    signOut(err);
  }
}

start();

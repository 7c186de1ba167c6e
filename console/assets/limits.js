// A key's usage limit and named rate limits (SPEC §9) in the console's
// words: "123 uses left", "daily to 1000", "search: 10 per 60 s". The key
// object carries remaining (null: unlimited), refill (null: none) and
// rate_limits ([] for none). LimitsEditor is the forms' editor of the
// named limits.

import { clear, el } from './dom.js';

// NNBSP groups digits: a narrow no-break space, so "50 000" never breaks.
const NNBSP = '\u202f';

// count writes n with its digits grouped by three from five digits on,
// as print does: 1000, 50 000, 1 250 000.
export function count(n) {
  const s = String(n);
  if (!/^\d{5,}$/.test(s)) {
    return s;
  }
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, NNBSP);
}

// usageLimited reports whether k has a usage limit (remaining set).
export function usageLimited(k) {
  return k.remaining !== null && k.remaining !== undefined;
}

// usesLeft is k's remaining uses in words: "unlimited", "1 use left",
// "50 000 uses left".
export function usesLeft(k) {
  if (!usageLimited(k)) {
    return 'unlimited';
  }
  return count(k.remaining) + (k.remaining === 1 ? ' use left' : ' uses left');
}

// refillText is a refill in words: "daily to 1000", "monthly to 50 000",
// or "none".
export function refillText(refill) {
  if (refill === null || refill === undefined) {
    return 'none';
  }
  return refill.interval + ' to ' + count(refill.amount);
}

// duration writes a limit's window: whole hours in hours ("24 h"),
// anything else in seconds ("60 s", "90 s").
function duration(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) {
    return count(seconds / 3600) + ' h';
  }
  return count(seconds) + ' s';
}

// rateLimitText is a named rate limit in words: "search: 10 per 60 s".
export function rateLimitText(l) {
  return l.name + ': ' + count(l.limit) + ' per ' + duration(l.duration_seconds);
}

// ---- the named rate limits editor of the create and edit forms ----

// MAX_LIMITS is how many named limits a key may have (SPEC §9).
export const MAX_LIMITS = 8;

// UNITS are the editor's units of a limit's window, in seconds.
const UNITS = [['1', 'seconds'], ['60', 'minutes'], ['3600', 'hours']];

// splitDuration writes seconds in the largest unit that divides it:
// 86400 is 24 hours, 60 is 1 minute, 90 is 90 seconds.
export function splitDuration(seconds) {
  for (const [unit] of [...UNITS].reverse()) {
    const u = Number(unit);
    if (seconds >= u && seconds % u === 0) {
      return { per: String(seconds / u), unit };
    }
  }
  return { per: String(seconds), unit: '1' };
}

// LimitsEditor is the rows of named rate limits in a form: #PREFIX-limits
// (a fieldset), its rows in #PREFIX-limits-rows and its add button
// #PREFIX-limits-add. Each row has a name, a limit and a window (a
// number and a unit), each control labelled, and a remove button. It
// remembers the list it was set to, so a form sends rate_limits only when
// the rows changed, and which row each item of the last list it read came
// from, so the API's rate_limits[2].name finds its row.
export class LimitsEditor {
  constructor(prefix, $) {
    this.prefix = prefix;
    this.$ = $;
    this.next = 0; // row ids are never reused: an error's id stays its row's
    this.initial = '';
    this.sent = []; // the rows of the last read(), in the list's order
    this.rows = $(prefix + '-limits-rows');
    this.add = $(prefix + '-limits-add');
    this.add.addEventListener('click', () => {
      const row = this.addRow();
      if (row !== null) {
        row.querySelector('[data-field="name"]').focus();
      }
    });
    this.rows.addEventListener('click', (ev) => {
      const b = ev.target instanceof Element ? ev.target.closest('button[data-action="remove-limit"]') : null;
      if (b !== null) {
        this.removeRow(b.closest('.rl-row'));
      }
    });
  }

  // set replaces the rows with list (the key's, or the caller's on
  // create) and takes it as the unchanged state.
  set(list) {
    clear(this.rows);
    this.sent = [];
    for (const l of list || []) {
      const { per, unit } = splitDuration(l.duration_seconds);
      this.addRow({ name: l.name, limit: String(l.limit), per, unit });
    }
    this.initial = this.signature();
  }

  // changed reports whether the rows differ from what set gave them.
  changed() {
    return this.signature() !== this.initial;
  }

  signature() {
    return JSON.stringify([...this.rows.children].map((row) =>
      ['name', 'limit', 'per', 'unit'].map((f) => row.querySelector('[data-field="' + f + '"]').value)));
  }

  addRow(v = { name: '', limit: '', per: '1', unit: '60' }) {
    if (this.rows.children.length >= MAX_LIMITS) {
      return null;
    }
    const id = this.prefix + '-limit-' + (this.next++);
    const cell = (label, control, cls) => el('div', { class: 'rl-cell ' + cls },
      el('label', { htmlFor: control.id, class: 'rl-label', 'data-label': label }, label), control);
    const name = el('input', { type: 'text', id: id + '-name', value: v.name, maxLength: 32, autocomplete: 'off',
      placeholder: 'search', 'data-field': 'name' });
    name.setAttribute('spellcheck', 'false');
    const limit = el('input', { type: 'number', id: id + '-limit', value: v.limit, min: 1, step: 1, inputMode: 'numeric',
      'data-field': 'limit' });
    const per = el('input', { type: 'number', id: id + '-per', value: v.per, min: 1, step: 1, inputMode: 'numeric',
      'data-field': 'per' });
    const unit = el('select', { id: id + '-unit', 'data-field': 'unit' },
      ...UNITS.map(([value, text]) => el('option', { value, selected: value === v.unit }, text)));
    const row = el('div', { class: 'rl-row', id },
      cell('Name', name, 'rl-name'),
      cell('Requests', limit, 'rl-limit'),
      el('div', { class: 'rl-cell rl-per' },
        el('label', { htmlFor: per.id, class: 'rl-label', 'data-label': 'Per' }, 'Per'),
        el('div', { class: 'pair' }, per,
          el('label', { htmlFor: unit.id, class: 'visually-hidden', 'data-label': 'Unit' }, 'Unit'), unit)),
      el('div', { class: 'rl-cell rl-remove' },
        el('button', { type: 'button', id: id + '-remove', class: 'small secondary', 'data-action': 'remove-limit' }, 'Remove')));
    row.setAttribute('role', 'group');
    this.rows.append(row);
    this.renumber();
    return row;
  }

  // removeRow drops row; focus goes to the remove button now in its
  // place (or the one above), else to the add button.
  removeRow(row) {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    this.renumber();
    const b = next === null ? null : next.querySelector('button[data-action="remove-limit"]');
    (b || this.add).focus();
  }

  // renumber names each row's controls after its place ("Name of limit
  // 2"), for screen readers, and disables adding at MAX_LIMITS rows.
  renumber() {
    [...this.rows.children].forEach((row, i) => {
      const n = ' of limit ' + (i + 1);
      row.setAttribute('aria-label', 'Limit ' + (i + 1));
      for (const l of row.querySelectorAll('label[data-label]')) {
        l.textContent = l.dataset.label;
        l.append(el('span', { class: 'visually-hidden' }, n));
      }
      row.querySelector('button[data-action="remove-limit"]').setAttribute('aria-label', 'Remove limit ' + (i + 1));
    });
    const full = this.rows.children.length >= MAX_LIMITS;
    this.add.disabled = full;
    this.add.textContent = full ? 'At most ' + MAX_LIMITS : 'Add a limit';
  }

  // read returns the rows as the API takes them, in the rows' order.
  // invalid(id, message) is called (and must throw) for a row whose name,
  // limit or window is missing or not a whole number; the API checks the
  // rest (the name's pattern, the ranges) and names the row it refuses.
  read(invalid) {
    const out = [];
    this.sent = [];
    for (const row of this.rows.children) {
      const f = (name) => row.querySelector('[data-field="' + name + '"]');
      const name = f('name').value.trim();
      if (name === '') {
        invalid(f('name').id, 'Give the limit a name, like search.');
      }
      const whole = (field, what) => {
        const v = f(field).value.trim();
        if (!/^\d+$/.test(v)) {
          invalid(f(field).id, what + ' must be a whole number, 1 or more.');
        }
        return Number(v);
      };
      const limit = whole('limit', 'The number of requests');
      const per = whole('per', 'The window');
      out.push({ name, limit, duration_seconds: per * Number(f('unit').value) });
      this.sent.push(row);
    }
    return out;
  }

  // controlsFor lists the ids of the controls an API error's param names:
  // rate_limits is the whole editor; rate_limits[i].name, .limit and
  // .duration_seconds a field of the row sent as item i. null when that
  // row is gone.
  controlsFor(index, field) {
    if (index === undefined) {
      return [this.prefix + '-limits'];
    }
    const row = this.sent[Number(index)];
    if (row === undefined || !row.isConnected) {
      return null;
    }
    const fields = { name: ['name'], limit: ['limit'], duration_seconds: ['per', 'unit'] }[field] || ['name'];
    return fields.map((f) => row.querySelector('[data-field="' + f + '"]').id);
  }
}

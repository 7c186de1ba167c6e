// Usage analytics in the console (SPEC §9): a key's last 24 hours as a
// small chart in the keys list, and a usage view per key (by hour or by
// day, allowed against denied, denials by code). Charts are drawn on a
// canvas by this code, nothing fetched from elsewhere; each canvas carries
// a text summary for screen readers, and the view a table of its numbers.

import { call, query } from './api.js';
import { clear, el } from './dom.js';
import { count, rateLimitText, refillText, usageLimited, usesLeft } from './limits.js';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const COLORS = { allowed: '#1a7f37', denied: '#b3261e', axis: '#d1d9e0', text: '#59636e' };

// keyUsage asks the API for key id's buckets; params are granularity,
// from and to (RFC 3339) as the API takes them.
export function keyUsage(key, id, params = {}) {
  return call(key, 'GET', '/v1/api-keys/' + encodeURIComponent(id) + '/usage' + query(params));
}

// series spreads the API's buckets (empty ones left out) over every
// bucket of [from, to), oldest first, the missing ones as zeros.
export function series(data, from, to, step) {
  const byStart = new Map();
  for (const b of data || []) {
    byStart.set(new Date(b.start).getTime(), b);
  }
  const out = [];
  for (let t = from; t < to; t += step) {
    const b = byStart.get(t);
    out.push({ start: t, allowed: b ? b.allowed : 0, denied: b ? b.denied : 0, byCode: b ? b.by_code || {} : {} });
  }
  return out;
}

function floorTo(t, step) {
  return Math.floor(t / step) * step;
}

// lastHours is the range of the last n hours, ending with the current one.
export function lastHours(n, now = Date.now()) {
  const to = floorTo(now, HOUR) + HOUR;
  return { from: to - n * HOUR, to, step: HOUR };
}

// lastDays is the range of the last n days (UTC), ending with today.
export function lastDays(n, now = Date.now()) {
  const to = floorTo(now, DAY) + DAY;
  return { from: to - n * DAY, to, step: DAY };
}

function iso(t) {
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// draw paints s as stacked bars (allowed below, denied above) on canvas,
// at the device's pixel ratio, with an axis line and, when labels is
// set, the largest value and the first and last bucket's times.
function draw(canvas, s, { labels = false, format = null } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || Number(canvas.width);
  const h = canvas.clientHeight || Number(canvas.height);
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext('2d');
  if (ctx === null) {
    return;
  }
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  const padL = labels ? 44 : 0;
  const padB = labels ? 18 : 1;
  const padT = labels ? 8 : 1;
  const plotW = w - padL;
  const plotH = h - padB - padT;
  const max = Math.max(1, ...s.map((b) => b.allowed + b.denied));
  const slot = plotW / Math.max(1, s.length);
  const barW = Math.max(1, slot * 0.8);
  s.forEach((b, i) => {
    const x = padL + i * slot + (slot - barW) / 2;
    const ha = (b.allowed / max) * plotH;
    const hd = (b.denied / max) * plotH;
    ctx.fillStyle = COLORS.allowed;
    ctx.fillRect(x, padT + plotH - ha, barW, ha);
    ctx.fillStyle = COLORS.denied;
    ctx.fillRect(x, padT + plotH - ha - hd, barW, hd);
  });
  ctx.fillStyle = COLORS.axis;
  ctx.fillRect(padL, padT + plotH, plotW, 1);
  if (labels) {
    ctx.fillStyle = COLORS.text;
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'top';
    ctx.textAlign = 'right';
    ctx.fillText(String(max), padL - 6, padT);
    ctx.fillText('0', padL - 6, padT + plotH - 12);
    ctx.fillRect(padL - 3, padT, 3, 1);
    if (s.length > 0 && format !== null) {
      ctx.textAlign = 'left';
      ctx.fillText(format(s[0].start), padL, padT + plotH + 4);
      ctx.textAlign = 'right';
      ctx.fillText(format(s[s.length - 1].start), w, padT + plotH + 4);
    }
  }
}

function totals(s) {
  let allowed = 0;
  let denied = 0;
  const byCode = {};
  for (const b of s) {
    allowed += b.allowed;
    denied += b.denied;
    for (const [c, n] of Object.entries(b.byCode)) {
      byCode[c] = (byCode[c] || 0) + n;
    }
  }
  return { allowed, denied, byCode };
}

// spark is the keys list's chart of a key's last 24 hours: a button (it
// opens the usage view) holding a canvas, filled when the API answers.
// onOpen is called with the key when the button is pressed.
export function spark(apiKey, k) {
  const canvas = el('canvas', { class: 'spark', width: 96, height: 22, role: 'img', 'aria-label': 'Usage in the last 24 hours: loading' });
  const button = el('button', {
    type: 'button', class: 'spark-button', id: 'usage-' + k.id, 'data-action': 'usage', 'data-key-id': k.id,
    'aria-label': 'Usage of ' + k.name, title: 'Last 24 hours: allowed (green) and denied (red). Open the usage view.',
  }, canvas);
  const r = lastHours(24);
  keyUsage(apiKey, k.id, { granularity: 'hour', from: iso(r.from), to: iso(r.to) }).then((res) => {
    const s = series(res.data, r.from, r.to, r.step);
    const t = totals(s);
    draw(canvas, s);
    canvas.setAttribute('aria-label', 'Last 24 hours: ' + t.allowed + ' allowed, ' + t.denied + ' denied');
    canvas.dataset.allowed = String(t.allowed);
    canvas.dataset.denied = String(t.denied);
    canvas.dataset.drawn = 'true';
  }).catch(() => {
    canvas.setAttribute('aria-label', 'Usage unavailable');
    canvas.dataset.drawn = 'error';
  });
  return button;
}

function hourLabel(t) {
  const s = new Date(t).toISOString();
  return s.slice(5, 10) + ' ' + s.slice(11, 16);
}

function dayLabel(t) {
  return new Date(t).toISOString().slice(0, 10);
}

// UsageView is the per-key usage view: #usage-view in the page.
export class UsageView {
  constructor($) {
    this.$ = $;
    this.key = null;
    this.apiKey = null;
    this.granularity = 'hour';
    this.generation = 0;
    for (const g of ['hour', 'day']) {
      $('usage-' + g).addEventListener('click', () => this.load(g));
    }
    window.addEventListener('resize', () => {
      if (this.last) {
        this.render(this.last);
      }
    });
  }

  // open shows k's usage with apiKey, by hour; onError gets a failed call.
  open(apiKey, k, onError) {
    this.apiKey = apiKey;
    this.key = k;
    this.onError = onError;
    this.last = null;
    this.setKey(k);
    return this.load('hour');
  }

  // setKey shows k's name and limits: its uses left, its refill and its
  // rate limits (the per-minute one, then the named ones). The view calls
  // it with the key it was opened with, and again with a fresher copy.
  setKey(k) {
    const $ = this.$;
    this.key = k;
    $('usage-title').textContent = 'Usage of ' + k.name;
    $('usage-key').textContent = k.prefix + '…' + k.last4 + ' · ' + k.id;
    const remaining = $('usage-remaining');
    remaining.textContent = usageLimited(k) ? count(k.remaining) : 'unlimited';
    remaining.title = usesLeft(k);
    remaining.classList.toggle('exhausted', usageLimited(k) && k.remaining === 0);
    remaining.classList.toggle('muted', !usageLimited(k));
    $('usage-refill').textContent = refillText(k.refill);
    $('usage-refill').classList.toggle('muted', !k.refill);
    const limits = $('usage-rate-limits');
    clear(limits);
    const rpm = k.rate_limit_per_minute;
    if (typeof rpm === 'number' && rpm > 0) {
      limits.append(el('span', { class: 'limit', 'data-limit': 'per-minute' }, count(rpm) + ' per minute'));
    }
    for (const l of k.rate_limits || []) {
      limits.append(el('span', { class: 'limit', 'data-limit': l.name }, rateLimitText(l)));
    }
    if (limits.children.length === 0) {
      limits.append(el('span', { class: 'muted' }, 'none'));
    }
  }

  async load(granularity) {
    const $ = this.$;
    this.granularity = granularity;
    for (const g of ['hour', 'day']) {
      $('usage-' + g).setAttribute('aria-pressed', String(g === granularity));
    }
    const r = granularity === 'hour' ? lastHours(24) : lastDays(30);
    const generation = ++this.generation;
    $('usage-chart').dataset.drawn = 'false';
    try {
      const res = await keyUsage(this.apiKey, this.key.id, { granularity, from: iso(r.from), to: iso(r.to) });
      if (generation !== this.generation) {
        return;
      }
      this.last = { s: series(res.data, r.from, r.to, r.step), granularity };
      this.render(this.last);
    } catch (err) {
      if (generation === this.generation && this.onError) {
        this.onError(err);
      }
    }
  }

  render({ s, granularity }) {
    const $ = this.$;
    const format = granularity === 'hour' ? hourLabel : dayLabel;
    const t = totals(s);
    const canvas = $('usage-chart');
    draw(canvas, s, { labels: true, format });
    const span = granularity === 'hour' ? 'the last 24 hours, by hour' : 'the last 30 days, by day';
    canvas.setAttribute('aria-label', 'Usage in ' + span + ': ' + t.allowed + ' allowed, ' + t.denied + ' denied');
    canvas.dataset.drawn = 'true';
    canvas.dataset.buckets = String(s.filter((b) => b.allowed + b.denied > 0).length);
    $('usage-span').textContent = span.charAt(0).toUpperCase() + span.slice(1) + ' (UTC)';
    $('usage-allowed').textContent = String(t.allowed);
    $('usage-denied').textContent = String(t.denied);
    const codes = $('usage-codes');
    clear(codes);
    const entries = Object.entries(t.byCode).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    for (const [c, n] of entries) {
      codes.append(el('tr', { 'data-code': c }, el('td', {}, el('code', {}, c)), el('td', { class: 'num' }, String(n))));
    }
    $('usage-codes-empty').hidden = entries.length > 0;
    const rows = $('usage-rows');
    clear(rows);
    for (const b of s.filter((x) => x.allowed + x.denied > 0).reverse()) {
      const by = Object.entries(b.byCode).map(([c, n]) => c + ' ' + n).join(', ');
      rows.append(el('tr', {},
        el('td', {}, format(b.start)),
        el('td', { class: 'num' }, String(b.allowed)),
        el('td', { class: 'num' }, String(b.denied)),
        el('td', {}, by || '—')));
    }
    $('usage-rows-empty').hidden = rows.children.length > 0;
  }
}

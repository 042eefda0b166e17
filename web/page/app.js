// daqd status page: polls /api/v1/status every second, keeps five minutes of
// link rates for the chart, draws the live frame and dose of one unit as
// heatmaps, and starts/stops runs with the token the user types.
// Plain JavaScript and canvas; served by daqd itself.
'use strict';

const HISTORY_SECONDS = 300;
const LINK_COLORS = ['#2f6fde', '#e4572e', '#22883f', '#9b51e0', '#d98c00', '#0aa3a3', '#c2185b', '#5d6d7e'];
const VIRIDIS = [
  [0.0, 68, 1, 84], [0.13, 72, 40, 120], [0.25, 62, 73, 137], [0.38, 49, 104, 142], [0.5, 38, 130, 142],
  [0.63, 31, 158, 137], [0.75, 53, 183, 121], [0.88, 110, 206, 88], [1.0, 253, 231, 37],
];

const state = {
  history: [],          // {t, links: [{pps, bps}]}
  unit: null,           // unit shown in the live view
  unitsKnown: '',
  runsRefreshedAt: 0,
  runActive: false,
};

const $ = (id) => document.getElementById(id);

const LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < VIRIDIS.length - 2 && t > VIRIDIS[k + 1][0]) k++;
    const a = VIRIDIS[k], b = VIRIDIS[k + 1];
    const f = (t - a[0]) / (b[0] - a[0]);
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(a[c + 1] + f * (b[c + 1] - a[c + 1]));
  }
  return lut;
})();

// ---- formatting ----
function si(v, digits = 1) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e12) return (v / 1e12).toFixed(digits) + ' T';
  if (a >= 1e9) return (v / 1e9).toFixed(digits) + ' G';
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + ' M';
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + ' k';
  return a >= 100 || Number.isInteger(v) ? Math.round(v).toString() : v.toFixed(digits);
}
const count = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'));
function bytes(v) {
  if (v === null || v === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v.toString()) + ' ' + units[i];
}
function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, sec = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}
const mbps = (bytesPerS) => bytesPerS / 1e6;
const shortTime = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '–');

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

// ---- HTTP ----
async function api(path, options = {}) {
  const res = await fetch(path, { cache: 'no-store', ...options });
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
  return { ok: res.ok, status: res.status, body };
}

// ---- status ----
async function pollStatus() {
  try {
    const r = await api('/api/v1/status');
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(r.body);
    const conn = $('conn');
    conn.textContent = 'live';
    conn.className = 'conn ok';
  } catch (e) {
    const conn = $('conn');
    conn.textContent = 'daqd not reachable';
    conn.className = 'conn down';
  } finally {
    setTimeout(pollStatus, 1000);
  }
}

function render(s) {
  setText('version', s.version);
  setText('backend-receiver', s.backends.receiver);
  setText('backend-processing', s.backends.processing);
  setText('uptime', duration(s.uptime_s));
  const t = s.totals;
  setText('total-pps', si(t.packets_per_s));
  setText('total-mbps', mbps(t.bytes_per_s).toFixed(1));
  setText('total-packets', count(t.packets));
  setText('total-lost', count(t.packets_lost));
  $('total-lost').classList.toggle('bad', t.packets_lost > 0);
  setText('total-invalid', count(t.invalid));
  setText('total-drops', `${count(t.kernel_drops)} / ${count(t.ring_dropped)}`);
  $('total-drops').classList.toggle('bad', t.kernel_drops + t.ring_dropped > 0);

  if (s.storage) {
    const st = s.storage;
    setText('disk-free', st.free_bytes === null ? '–' : bytes(st.free_bytes) +
      (st.size_bytes ? ` (${(100 * st.free_bytes / st.size_bytes).toFixed(0)} %)` : ''));
    $('disk-free').classList.toggle('bad', st.free_bytes !== null && st.free_bytes < 20e9);
    setText('written-mbps', mbps(st.bytes_written_per_s).toFixed(1));
    setText('writer-backlog', `${count(st.writer_backlog_blocks)} / ${count(st.frame_buffer_blocks)}` +
      (st.processing_backlog_peak !== null ? ` · proc. peak ${count(st.processing_backlog_peak)}` : ''));
    $('writer-backlog').classList.toggle('bad', st.frame_buffer_blocks > 0 && st.frame_buffer_blocks_free === 0);
  }

  const fill = Math.max(0, Math.min(1, s.ring_fill));
  const bar = $('ring-fill-bar');
  bar.style.width = (fill * 100).toFixed(1) + '%';
  bar.className = 'bar-fill' + (fill > 0.8 ? ' bad' : fill > 0.5 ? ' warn' : '');
  setText('ring-fill-text', (fill * 100).toFixed(1) + ' %');

  renderLinks(s.links);
  renderUnits(s.units);
  renderRun(s);
  renderStream(s.stream);
  renderChecks(s.host_checks);
  setText('output-dir', s.output_dir);

  state.history.push({ t: Date.now(), links: s.links.map((l) => ({ pps: l.packets_per_s, bps: l.bytes_per_s })) });
  const cutoff = Date.now() - HISTORY_SECONDS * 1000;
  while (state.history.length && state.history[0].t < cutoff) state.history.shift();
  drawChart(s.links);
}

function renderLinks(links) {
  const body = $('links-table').tBodies[0];
  body.replaceChildren();
  links.forEach((l, i) => {
    const tr = document.createElement('tr');
    const name = cell(tr, String(l.link));
    name.style.borderLeft = `4px solid ${LINK_COLORS[i % LINK_COLORS.length]}`;
    cell(tr, l.endpoint);
    cell(tr, si(l.packets_per_s));
    cell(tr, mbps(l.bytes_per_s).toFixed(2));
    cell(tr, count(l.packets));
    cell(tr, bytes(l.bytes));
    cell(tr, (l.ring_fill * 100).toFixed(1) + ' %', l.ring_fill > 0.8 ? 'bad' : '');
    cell(tr, count(l.kernel_drops), l.kernel_drops > 0 ? 'bad' : '');
    cell(tr, count(l.ring_dropped), l.ring_dropped > 0 ? 'bad' : '');
    cell(tr, count(l.invalid));
    body.appendChild(tr);
  });
}

function renderUnits(units) {
  const body = $('units-table').tBodies[0];
  body.replaceChildren();
  $('units-empty').hidden = units.length > 0;
  for (const u of units) {
    const tr = document.createElement('tr');
    tr.dataset.unit = u.unit;
    if (u.unit === state.unit) tr.className = 'selected';
    cell(tr, String(u.unit));
    cell(tr, count(u.channels));
    cell(tr, si(u.frames_per_s));
    cell(tr, count(u.frames_complete));
    cell(tr, count(u.frames_incomplete), u.frames_incomplete > 0 ? 'bad' : '');
    cell(tr, count(u.frames_lost), u.frames_lost > 0 ? 'bad' : '');
    cell(tr, count(u.frames_overflow), u.frames_overflow > 0 ? 'bad' : '');
    cell(tr, count(u.frames_written));
    cell(tr, count(u.packets_lost), u.packets_lost > 0 ? 'bad' : '');
    cell(tr, count(u.duplicates));
    cell(tr, count(u.late));
    cell(tr, count(u.last_frame_number));
    tr.addEventListener('click', () => selectUnit(u.unit));
    body.appendChild(tr);
  }
  // The unit selector follows the units that can be viewed.
  const live = units.filter((u) => u.live).map((u) => u.unit);
  const key = live.join(',');
  if (key !== state.unitsKnown) {
    state.unitsKnown = key;
    const sel = $('unit-select');
    sel.replaceChildren();
    for (const id of live) {
      const o = document.createElement('option');
      o.value = String(id);
      o.textContent = `unit ${id}`;
      sel.appendChild(o);
    }
    if (state.unit === null && live.length) selectUnit(live[0]);
    else if (state.unit !== null) sel.value = String(state.unit);
  }
}

function selectUnit(id) {
  state.unit = id;
  $('unit-select').value = String(id);
  for (const tr of $('units-table').tBodies[0].rows) tr.classList.toggle('selected', Number(tr.dataset.unit) === id);
  pollLive();
}

function renderRun(s) {
  const el = $('run-current');
  const badge = $('run-badge');
  state.runActive = !!s.run;
  const counts = $('run-counts');
  if (s.run && s.run.counts) {
    const c = s.run.counts;
    counts.textContent = `this run: ${count(c.packets_received)} packets, ${count(c.packets_lost)} lost, ` +
      `${count(c.frames_complete)} complete / ${count(c.frames_incomplete)} incomplete frames, ` +
      `${count(c.frames_written)} written` +
      (s.lifetime ? ` — since daqd started: ${count(s.lifetime.packets_received)} packets, ${count(s.lifetime.runs)} run(s)` : '');
  } else {
    counts.textContent = s.lifetime ? `since daqd started: ${count(s.lifetime.packets_received)} packets, ` +
      `${count(s.lifetime.frames_written)} frames written in ${count(s.lifetime.runs)} run(s)` : '';
  }
  if (s.run && s.run.kind === 'pedestal') {
    const p = s.run.pedestal || {};
    el.textContent = `Pedestal run ${s.run.name} since ${shortTime(s.run.started)} (${duration(s.run.seconds)}): ` +
      `${count(p.units_complete)} of ${count(p.units_seen)} unit(s) have their ${count(p.frames_per_unit)} frames ` +
      `-> ${s.run.files.join(', ')} (no beam, please)`;
    el.className = 'run-current rec';
    badge.textContent = `● PEDESTAL ${s.run.name}`;
    badge.className = 'badge rec';
  } else if (s.run && s.run.state === 'prepared') {
    // A two-phase start (daqctl, several hosts): the file exists, recording starts at the commit.
    el.textContent = `Run ${s.run.name} prepared${s.run.host ? ` (host ${s.run.host} of run ${s.run.run})` : ''}: ` +
      `${s.run.files.join(', ') || '…'} created, recording starts when every host is ready (commit)`;
    el.className = 'run-current';
    badge.textContent = `◌ PREPARED ${s.run.name}`;
    badge.className = 'badge';
  } else if (s.run) {
    el.textContent = `Recording run ${s.run.name}${s.run.host ? ` (host ${s.run.host} of run ${s.run.run})` : ''} since ${shortTime(s.run.started)} (${duration(s.run.seconds)}): ` +
      `${count(s.run.frames_written)} frames, ${bytes(s.run.bytes_written)} in ${s.run.files.join(', ') || '…'}` +
      (s.run.compression === 'bslz4'
        ? `; compressed bslz4${s.run.compression_ratio > 0 ? ` ×${s.run.compression_ratio.toFixed(1)}` : ''}` +
          (s.compression ? `, compressor queue ${s.compression.queue_chunks}/${s.compression.queue_capacity_chunks} chunks` : '')
        : '');
    el.className = 'run-current rec';
    badge.textContent = `● REC ${s.run.name}`;
    badge.className = 'badge rec';
  } else {
    el.textContent = 'No run is being recorded.';
    el.className = 'run-current';
    badge.textContent = 'idle';
    badge.className = 'badge idle';
  }
  $('run-start').disabled = !!s.run;
  $('pedestal-start').disabled = !!s.run;
  $('run-stop').disabled = !s.run;
}

// The live stream (docs/STREAM.md): where it is, who takes it, what it sent
// and what it dropped (by reason).
function renderStream(st) {
  const el = $('stream-line');
  if (!st) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  const d = st.frames_dropped;
  const dropped = d.queue + d.no_peer + d.hwm;
  el.textContent = `Stream ${st.push.join(', ')} (run messages and previews ${st.publish.join(', ')}` +
    `${st.curve ? ', CURVE' : ''}): ${st.peers} consumer(s), ${count(st.frames_sent)} frames / ` +
    `${bytes(st.bytes_sent)} sent` +
    (dropped > 0 ? `; ${count(dropped)} frames dropped (no consumer ${count(d.no_peer)}, consumers full ` +
      `${count(d.hwm)}, sender behind ${count(d.queue)})` : '; none dropped');
  el.className = dropped > 0 ? 'run-current warn' : 'run-current';
}

function renderChecks(checks) {
  const ul = $('host-checks');
  if (ul.childElementCount === checks.length) return;  // fixed at start
  ul.replaceChildren();
  for (const c of checks) {
    const li = document.createElement('li');
    li.className = c.status;
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = c.status === 'ok' ? 'OK' : c.status === 'failing' ? 'FAIL' : '?';
    li.appendChild(tag);
    li.appendChild(document.createTextNode(`${c.check}: ${c.detail}`));
    if (c.status === 'failing' && c.fix) {
      li.appendChild(document.createTextNode(' — fix: '));
      const code = document.createElement('code');
      code.textContent = c.fix;
      li.appendChild(code);
    }
    ul.appendChild(li);
  }
}

// ---- rate chart ----
// Round axis ticks: a step of 1, 2, 2.5 or 5 × 10^k giving at most `n`
// intervals up to `max`, and the top tick (a multiple of it).
function niceTicks(max, n = 4) {
  if (!(max > 0)) return { step: 0.25, top: 1 };
  const raw = max / n;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw * (1 - 1e-9));
  return { step, top: Math.ceil(max / step - 1e-9) * step };
}
// A tick's label with SI prefix and no false precision (2.5 k, 10 k, 0.25):
// as many decimals as the step needs.
function decimalsOf(x) {
  for (let d = 0; d < 4; d++) if (Math.abs(Math.round(x * 10 ** d) - x * 10 ** d) < 1e-6) return d;
  return 3;
}
function tickLabel(v, step) {
  const prefixes = [[1e12, ' T'], [1e9, ' G'], [1e6, ' M'], [1e3, ' k']];
  for (const [f, pre] of prefixes) if (step >= f / 10 && Math.abs(v) >= f) return (v / f).toFixed(decimalsOf(step / f)) + pre;
  return v.toFixed(decimalsOf(step));
}

function drawChart(links) {
  const canvas = $('rates-chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Date.now();
  const panels = [
    { title: 'packets / s', get: (p) => p.pps },
    { title: 'MB / s', get: (p) => p.bps / 1e6 },
  ];
  const left = 56, right = 12, gap = 26, top = 18;
  const ph = (h - top - gap - 20) / 2;
  panels.forEach((panel, pi) => {
    const y0 = top + pi * (ph + gap);
    let max = 0;
    for (const s of state.history) for (const l of s.links) max = Math.max(max, panel.get(l));
    const ticks = niceTicks(max * 1.05);
    max = ticks.top;
    ctx.strokeStyle = '#e1e6ee';
    ctx.fillStyle = '#6b7685';
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    const labels = [];
    for (let v = 0; v <= max + ticks.step * 1e-6; v += ticks.step) {
      const y = y0 + ph - (v / max) * ph;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(w - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.textAlign = 'right';
      const label = tickLabel(v, ticks.step);
      labels.push(label);
      ctx.fillText(label, left - 6, y + 4);
    }
    canvas.dataset['ticks' + pi] = labels.join('|');
    ctx.textAlign = 'left';
    ctx.fillStyle = '#1d2430';
    ctx.font = '600 12px system-ui, sans-serif';
    ctx.fillText(panel.title, left, y0 - 5);
    const x = (t) => left + (1 - (now - t) / (HISTORY_SECONDS * 1000)) * (w - left - right);
    links.forEach((_, li) => {
      ctx.strokeStyle = LINK_COLORS[li % LINK_COLORS.length];
      ctx.lineWidth = 1.8;
      ctx.beginPath();
      let started = false;
      for (const s of state.history) {
        const p = s.links[li];
        if (!p) continue;
        const px = x(s.t), py = y0 + ph - (panel.get(p) / max) * ph;
        if (!started) { ctx.moveTo(px, py); started = true; } else ctx.lineTo(px, py);
      }
      ctx.stroke();
    });
  });
  ctx.fillStyle = '#6b7685';
  ctx.font = '11px system-ui, sans-serif';
  ctx.textAlign = 'center';
  for (let m = 0; m <= 5; m++) {
    const px = left + (1 - m / 5) * (w - left - right);
    ctx.fillText(m === 0 ? 'now' : `−${m} min`, px, h - 4);
  }
  const legend = $('rates-legend');
  const key = links.map((l) => l.endpoint).join(',');
  if (legend.dataset.key !== key) {
    legend.dataset.key = key;
    legend.replaceChildren();
    links.forEach((l, i) => {
      const span = document.createElement('span');
      const sw = document.createElement('i');
      sw.style.background = LINK_COLORS[i % LINK_COLORS.length];
      span.appendChild(sw);
      span.appendChild(document.createTextNode(`link ${l.link} (${l.endpoint})`));
      legend.appendChild(span);
    });
  }
}

// ---- live view ----
let liveTimer = null;
async function pollLive() {
  if (liveTimer) clearTimeout(liveTimer);
  liveTimer = null;
  try {
    if (state.unit !== null) {
      const r = await api(`/api/v1/units/${state.unit}/live`);
      if (r.ok) drawLive(r.body);
      else setText('live-info', r.body && r.body.error ? r.body.error : `HTTP ${r.status}`);
    }
  } catch (e) {
    setText('live-info', 'daqd not reachable');
  } finally {
    liveTimer = setTimeout(pollLive, 1000);
  }
}

// What each heatmap shows, for the hover read-out and the dose rate.
const heat = { frame: null, dose: null };
let lastLive = null;
let doseRatePrev = null;  // {unit, kind, t, sum, frames}

function drawLive(l, redraw = false) {
  lastLive = l;
  setText('live-info', `${count(l.channels)} channels as ${l.grid.rows} × ${l.grid.cols}`);
  const calibrated = l.calibrated && l.calibrated.length === l.channels;
  setText('frame-caption', `frame ${count(l.frame_number)}${calibrated ? ', calibrated' : ''}` +
    `${l.missing_packets ? ` (${l.missing_packets} packets missing)` : ''}`);
  const doseText = {
    raw: `sum of raw samples over ${count(l.dose_frames)} sampled frames (uncalibrated, one per refresh)`,
    calibrated: `calibrated, summed over ${count(l.dose_frames)} frames of this run`,
    none: 'no dose stage configured',
  };
  setText('dose-caption', doseText[l.dose_kind] || '');
  // With calibration the calibrated frame is the more useful picture.
  const frame = calibrated ? l.calibrated : l.samples;
  drawHeat($('heat-frame'), frame, l.grid, 'frame', calibrated ? 'calibrated units' : 'ADC counts');
  const doseUnit = l.dose_kind === 'calibrated' ? 'calibrated units, summed' : 'ADC counts, summed';
  if (l.dose && l.dose.length === l.channels) drawHeat($('heat-dose'), l.dose, l.grid, 'dose', doseUnit);
  else clearHeat($('heat-dose'), 'dose');
  // Dose rate: what the dose over all channels gained per second since the last refresh.
  if (redraw) return;  // the same data again (log scale toggled): the rate stays
  if (l.dose && l.dose.length) {
    let sum = 0;
    for (const v of l.dose) sum += v;
    const now = Date.now();
    const p = doseRatePrev;
    if (p && p.unit === l.unit && p.kind === l.dose_kind && sum >= p.sum && now > p.t) {
      const perS = (sum - p.sum) / ((now - p.t) / 1000);
      const framesPerS = (l.dose_frames - p.frames) / ((now - p.t) / 1000);
      setText('dose-rate', `${si(perS)} /s (all channels, ${doseUnit.split(',')[0]}; ${framesPerS.toFixed(1)} frames/s)`);
    } else if (!p || p.unit !== l.unit) {
      setText('dose-rate', '…');
    }
    doseRatePrev = { unit: l.unit, kind: l.dose_kind, t: now, sum, frames: l.dose_frames };
  } else {
    setText('dose-rate', '–');
  }
}

function hoverHeat(ev, which) {
  const h = heat[which];
  const el = $(`${which}-hover`);
  if (!h) { el.textContent = 'hover a pixel for its value'; return; }
  const c = ev.target;
  const r = c.getBoundingClientRect();
  const px = ((ev.clientX - r.left) / r.width) * c.width, py = ((ev.clientY - r.top) / r.height) * c.height;
  const col = Math.floor((px - h.ox) / h.scale), row = Math.floor((py - h.oy) / h.scale);
  const ch = row * h.cols + col;
  if (col < 0 || row < 0 || col >= h.cols || row >= h.rows || ch >= h.values.length) { el.textContent = '–'; return; }
  const v = h.values[ch];
  el.textContent = `row ${row}, column ${col} (channel ${ch}): ${Number.isInteger(v) ? v : v.toFixed(2)} ${h.unit}`;
}

function drawHeat(canvas, values, grid, which, unit) {
  const { rows, cols } = grid;
  let min = Infinity, max = -Infinity;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; }
  const img = new ImageData(cols, rows);
  // Log scale: log10(1 + v - min), so the minimum maps to 0 whatever its sign.
  const log = $('heat-log').checked;
  const tf = log ? (v) => Math.log10(1 + Math.max(0, v - min)) : (v) => v - min;
  const span = max > min ? tf(max) : 1;
  for (let i = 0; i < rows * cols; i++) {
    const o = i * 4;
    if (i >= values.length) { img.data[o] = img.data[o + 1] = img.data[o + 2] = 225; img.data[o + 3] = 255; continue; }
    const k = Math.max(0, Math.min(255, Math.round((tf(values[i]) / span) * 255))) * 3;
    img.data[o] = LUT[k]; img.data[o + 1] = LUT[k + 1]; img.data[o + 2] = LUT[k + 2]; img.data[o + 3] = 255;
  }
  const off = document.createElement('canvas');
  off.width = cols;
  off.height = rows;
  off.getContext('2d').putImageData(img, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scale = Math.min(canvas.width / cols, canvas.height / rows);
  const dw = cols * scale, dh = rows * scale;
  ctx.drawImage(off, (canvas.width - dw) / 2, (canvas.height - dh) / 2, dw, dh);
  heat[which] = { values, rows, cols, scale, ox: (canvas.width - dw) / 2, oy: (canvas.height - dh) / 2, unit };
  setText(`${which}-min`, isFinite(min) ? si(min) : '–');
  setText(`${which}-max`, isFinite(max) ? si(max) : '–');
  setText(`${which}-unit`, `${unit}${log ? ', log scale' : ''}`);
  setText(`${which}-axes`, `pixels: column 0…${cols - 1} left to right, row 0…${rows - 1} top to bottom; channel = row × ${cols} + column`);
}

function clearHeat(canvas, which) {
  heat[which] = null;
  canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);
  setText(`${which}-min`, '–');
  setText(`${which}-max`, '–');
}

function drawScale(id) {
  const c = $(id);
  const ctx = c.getContext('2d');
  for (let x = 0; x < c.width; x++) {
    const k = Math.round((x / (c.width - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${LUT[k]},${LUT[k + 1]},${LUT[k + 2]})`;
    ctx.fillRect(x, 0, 1, c.height);
  }
}

// ---- runs ----
async function refreshRuns() {
  try {
    const r = await api('/api/v1/runs');
    if (!r.ok) return;
    const body = $('runs-table').tBodies[0];
    body.replaceChildren();
    for (const run of r.body.runs) {
      const tr = document.createElement('tr');
      cell(tr, run.name + (run.active ? ' (recording)' : ''));
      cell(tr, String(run.files.length));
      cell(tr, bytes(run.size_bytes));
      cell(tr, run.frames === null || run.frames === undefined ? '…' : count(run.frames));
      cell(tr, shortTime(run.started_at));
      cell(tr, run.active ? 'recording' : shortTime(run.stopped_at));
      body.appendChild(tr);
    }
    state.runsRefreshedAt = Date.now();
  } catch (e) {
    /* shown by the status poll */
  }
}

function message(text, ok) {
  const el = $('run-message');
  el.textContent = text;
  el.className = 'message ' + (ok ? 'ok' : 'error');
}

function authHeaders() {
  const token = $('run-token').value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The token lives in this tab's session storage: typed once, kept across
// reloads, gone with the tab (never in local storage, never in a cookie).
function rememberToken() {
  try { sessionStorage.setItem('daqd-token', $('run-token').value.trim()); } catch (e) { /* storage off */ }
}

async function postRun(request, what) {
  try {
    const r = await api('/api/v1/runs', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(request),
    });
    if (r.ok) message(`${what} ${r.body.run} started${r.body.name_generated ? ' (named by storage.run_name_pattern)' : ''}.`, true);
    else message(`Could not start: ${r.body && r.body.error ? r.body.error : 'HTTP ' + r.status}`, false);
  } catch (e) {
    message('daqd not reachable.', false);
  }
  refreshRuns();
}

async function startRun(ev) {
  ev.preventDefault();
  const name = $('run-name').value.trim();  // empty: daqd names it
  const request = {};
  if (name) request.name = name;
  if ($('run-compression').value) request.compression = $('run-compression').value;
  $('run-start').disabled = true;
  await postRun(request, 'Run');
}

async function startPedestal() {
  const name = $('run-name').value.trim();
  const frames = Number($('pedestal-frames').value);
  if (!Number.isInteger(frames) || frames < 2) { message('A pedestal run needs at least 2 frames per unit.', false); return; }
  const request = { kind: 'pedestal', frames };
  if (name) request.name = name;
  $('pedestal-start').disabled = true;
  await postRun(request, 'Pedestal run');
}

async function stopRun() {
  $('run-stop').disabled = true;
  try {
    const r = await api('/api/v1/runs/stop', { method: 'POST', headers: authHeaders() });
    if (r.ok && r.body.kind === 'pedestal')
      message(r.body.failed ? `Pedestal run ${r.body.run} stopped: ${r.body.error}` :
        `Pedestal run ${r.body.run} stopped: constants in ${r.body.files.join(', ')}.`, !r.body.failed);
    else if (r.ok) message(`Run ${r.body.run} stopped: ${count(r.body.frames_written)} frames in ${r.body.files.join(', ')}.`, true);
    else message(`Could not stop: ${r.body && r.body.error ? r.body.error : 'HTTP ' + r.status}`, false);
  } catch (e) {
    message('daqd not reachable.', false);
  }
  refreshRuns();
}

// The charts' history is kept by daqd (GET /api/v1/history, one sample a
// second): a reload or a second browser starts with the same five minutes.
async function loadHistory() {
  try {
    const r = await api('/api/v1/history');
    if (!r.ok || !r.body.samples.length) return;
    const samples = r.body.samples;
    const last = samples[samples.length - 1].t_ms;
    const now = Date.now();  // daqd's clock and this browser's may differ: keep the spacing
    const seeded = samples.map((h) => ({
      t: now - (last - h.t_ms),
      links: h.links.map((l) => ({ pps: l.packets_per_s, bps: l.bytes_per_s })),
    }));
    state.history = seeded.concat(state.history.filter((s) => s.t > now));
    $('rates-chart').dataset.seeded = String(seeded.length);
  } catch (e) {
    /* the status poll shows daqd unreachable */
  }
}

function init() {
  drawScale('scale-frame');
  drawScale('scale-dose');
  $('run-form').addEventListener('submit', startRun);
  $('run-stop').addEventListener('click', stopRun);
  $('pedestal-start').addEventListener('click', startPedestal);
  for (const which of ['frame', 'dose']) $(`heat-${which}`).addEventListener('mousemove', (e) => hoverHeat(e, which));
  $('heat-log').addEventListener('change', () => { if (lastLive) drawLive(lastLive, true); });
  try { $('run-token').value = sessionStorage.getItem('daqd-token') || ''; } catch (e) { /* storage off */ }
  $('run-token').addEventListener('input', rememberToken);
  $('unit-select').addEventListener('change', (e) => selectUnit(Number(e.target.value)));
  loadHistory().finally(pollStatus);
  pollLive();
  refreshRuns();
  setInterval(refreshRuns, 5000);
}

document.addEventListener('DOMContentLoaded', init);

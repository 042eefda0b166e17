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

  const fill = Math.max(0, Math.min(1, s.ring_fill));
  const bar = $('ring-fill-bar');
  bar.style.width = (fill * 100).toFixed(1) + '%';
  bar.className = 'bar-fill' + (fill > 0.8 ? ' bad' : fill > 0.5 ? ' warn' : '');
  setText('ring-fill-text', (fill * 100).toFixed(1) + ' %');

  renderLinks(s.links);
  renderUnits(s.units);
  renderRun(s);
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
  if (s.run) {
    el.textContent = `Recording run ${s.run.name} since ${shortTime(s.run.started)} (${duration(s.run.seconds)}): ` +
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
  $('run-stop').disabled = !s.run;
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
    { title: 'packets / s', get: (p) => p.pps, fmt: (v) => si(v) },
    { title: 'MB / s', get: (p) => p.bps / 1e6, fmt: (v) => v.toFixed(v >= 10 ? 0 : 1) },
  ];
  const left = 56, right = 12, gap = 26, top = 18;
  const ph = (h - top - gap - 20) / 2;
  panels.forEach((panel, pi) => {
    const y0 = top + pi * (ph + gap);
    let max = 0;
    for (const s of state.history) for (const l of s.links) max = Math.max(max, panel.get(l));
    max = max > 0 ? max * 1.15 : 1;
    ctx.strokeStyle = '#e1e6ee';
    ctx.fillStyle = '#6b7685';
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (let g = 0; g <= 4; g++) {
      const y = y0 + ph - (g / 4) * ph;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(w - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.textAlign = 'right';
      ctx.fillText(panel.fmt((g / 4) * max), left - 6, y + 4);
    }
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

function drawLive(l) {
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
  drawHeat($('heat-frame'), frame, l.grid, 'frame');
  if (l.dose && l.dose.length === l.channels) drawHeat($('heat-dose'), l.dose, l.grid, 'dose');
  else clearHeat($('heat-dose'), 'dose');
}

function drawHeat(canvas, values, grid, which) {
  const { rows, cols } = grid;
  let min = Infinity, max = -Infinity;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; }
  const img = new ImageData(cols, rows);
  const span = max > min ? max - min : 1;
  for (let i = 0; i < rows * cols; i++) {
    const o = i * 4;
    if (i >= values.length) { img.data[o] = img.data[o + 1] = img.data[o + 2] = 225; img.data[o + 3] = 255; continue; }
    const k = Math.max(0, Math.min(255, Math.round(((values[i] - min) / span) * 255))) * 3;
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
  setText(`${which}-min`, isFinite(min) ? si(min) : '–');
  setText(`${which}-max`, isFinite(max) ? si(max) : '–');
}

function clearHeat(canvas, which) {
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

async function startRun(ev) {
  ev.preventDefault();
  const name = $('run-name').value.trim();
  if (!name) { message('Enter a run name.', false); return; }
  $('run-start').disabled = true;
  try {
    const r = await api('/api/v1/runs', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify($('run-compression').value ? { name, compression: $('run-compression').value } : { name }),
    });
    if (r.ok) message(`Run ${r.body.run} started.`, true);
    else message(`Could not start: ${r.body && r.body.error ? r.body.error : 'HTTP ' + r.status}`, false);
  } catch (e) {
    message('daqd not reachable.', false);
  }
  refreshRuns();
}

async function stopRun() {
  $('run-stop').disabled = true;
  try {
    const r = await api('/api/v1/runs/stop', { method: 'POST', headers: authHeaders() });
    if (r.ok) message(`Run ${r.body.run} stopped: ${count(r.body.frames_written)} frames in ${r.body.files.join(', ')}.`, true);
    else message(`Could not stop: ${r.body && r.body.error ? r.body.error : 'HTTP ' + r.status}`, false);
  } catch (e) {
    message('daqd not reachable.', false);
  }
  refreshRuns();
}

function init() {
  drawScale('scale-frame');
  drawScale('scale-dose');
  $('run-form').addEventListener('submit', startRun);
  $('run-stop').addEventListener('click', stopRun);
  $('unit-select').addEventListener('change', (e) => selectUnit(Number(e.target.value)));
  pollStatus();
  pollLive();
  refreshRuns();
  setInterval(refreshRuns, 5000);
}

document.addEventListener('DOMContentLoaded', init);

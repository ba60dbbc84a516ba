/* rnntrace report: draws the embedded trace. No network, no dependencies.
 * Data: #rnntrace-meta (JSON) and #blob-* (base64 little-endian arrays), see src/render/report/html.rs.
 * Script API (documented in the README): window.rnntrace.value(layer, member, sequence, step, unit). */
(function () {
  'use strict';
  const meta = JSON.parse(document.getElementById('rnntrace-meta').textContent);
  const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const blobs = new Map();

  /* Decodes a base64 blob into a typed array of its dtype, without converting any value. */
  function decode(id, dtype) {
    if (blobs.has(id)) return blobs.get(id);
    const el = document.getElementById('blob-' + id);
    const bin = atob(el.textContent.trim());
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    let out;
    if (dtype === '|u1') out = bytes;
    else {
      const size = dtype === '<f8' ? 8 : 4;
      const n = bytes.length / size;
      if (LITTLE) out = size === 8 ? new Float64Array(bytes.buffer) : new Float32Array(bytes.buffer);
      else {
        const dv = new DataView(bytes.buffer);
        out = size === 8 ? new Float64Array(n) : new Float32Array(n);
        for (let i = 0; i < n; i++) out[i] = size === 8 ? dv.getFloat64(i * 8, true) : dv.getFloat32(i * 4, true);
      }
    }
    blobs.set(id, out);
    return out;
  }

  const layers = meta.layers;
  const S = meta.steps.end - meta.steps.start; // embedded steps
  const S0 = meta.steps.start;
  const F = meta.input.shape[2];
  const T_IN = meta.input.shape[1];
  const f32 = meta.precision === 'float32';
  const memberData = (li, mi) => decode('L' + li + '-M' + mi, layers[li].members[mi].data.dtype);
  const inputData = () => decode('input', meta.input.dtype);
  const maskData = (li) => (layers[li].masked ? decode('L' + li + '-mask', '|u1') : null);

  /* The shortest decimal that reads back as exactly the recorded number. */
  function exact(v) {
    if (!Number.isFinite(v)) return String(v);
    if (!f32) return String(v);
    for (let p = 1; p <= 9; p++) {
      const s = Number(v.toPrecision(p));
      if (Math.fround(s) === v) return String(s);
    }
    return String(v);
  }
  function short(v, p) {
    if (v === null || v === undefined) return '—';
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(Math.max(0, (p || 4) - 1));
    return String(Number(v.toPrecision(p || 4)));
  }
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  // ---------- state ----------
  const state = {
    seq: 0, // index into meta.sequences
    t0: 0, t1: Math.max(S, 1), // visible window, embedded step indices [t0, t1)
    listLayer: 0,
    sortKey: 'unit', sortDir: 1,
    selected: layers.map(() => new Set()),
    range: null, // {layer, from, to} embedded indices, inclusive from, exclusive to
    cursor: null, // {li, mi, step, unit} keyboard cursor
  };
  const explainAttr = new Map();
  if (meta.explain) for (const a of meta.explain.attributions) explainAttr.set(a.layer, a.values);

  // ---------- colours ----------
  function cssVar(n) { return getComputedStyle(document.documentElement).getPropertyValue(n).trim(); }
  function isDark() {
    const t = document.documentElement.getAttribute('data-theme');
    if (t) return t === 'dark';
    return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches;
  }
  function ramp(stops) {
    const lut = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (stops.length - 1);
      const k = Math.min(stops.length - 2, Math.floor(x));
      const f = x - k;
      for (let c = 0; c < 3; c++) lut[i * 3 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f;
    }
    return lut;
  }
  // viridis (sequential) and RdBu (diverging; its mid point follows the theme).
  const VIRIDIS = [[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]];
  let LUT = {};
  function makeLuts() {
    const mid = isDark() ? [40, 42, 46] : [247, 247, 247];
    LUT = {
      sequential: ramp(VIRIDIS),
      diverging: ramp([[5, 48, 97], [67, 147, 195], mid, [214, 96, 77], [103, 0, 31]]),
    };
  }
  makeLuts();
  function colourIndex(m, v) {
    const x = (v - m.lo) / (m.hi - m.lo || 1);
    return Math.max(0, Math.min(255, Math.round(x * 255)));
  }

  // ---------- unit order ----------
  function statOf(li, u, key) {
    const s = layers[li].unit_stats[u];
    if (key === 'unit') return u;
    if (key === 'saturation') return s.saturation;
    if (key === 'timescale') return s.keep === null ? null : (s.keep >= 1 ? Infinity : s.keep <= 0 ? 0 : -1 / Math.log(s.keep));
    if (key === 'variance') return s.variance;
    if (key === 'attribution') { const a = explainAttr.get(layers[li].name); return a ? a[u] : null; }
    return null;
  }
  function unitOrder(li) {
    const n = layers[li].units;
    const idx = Array.from({ length: n }, (_, i) => i);
    const key = state.sortKey, dir = state.sortDir;
    if (key === 'unit') return dir > 0 ? idx : idx.reverse();
    const v = idx.map((u) => statOf(li, u, key));
    idx.sort((a, b) => {
      const x = v[a], y = v[b];
      if (x === null && y === null) return a - b;
      if (x === null) return 1;
      if (y === null) return -1;
      return x === y ? a - b : (x < y ? -dir : dir);
    });
    return idx;
  }
  let orders = layers.map((_, li) => unitOrder(li));

  // ---------- layout helpers ----------
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, html) => {
    const e = document.createElement(tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (html !== undefined) e.innerHTML = html;
    return e;
  };
  const rowHeight = (units) => Math.max(1, Math.min(12, Math.floor(256 / units)));

  // Column layout of the visible window: `cols` columns, column c covering steps [colStart(c), colStart(c+1)).
  function columns(width) {
    const n = Math.max(1, state.t1 - state.t0);
    const cols = Math.max(1, Math.min(n, Math.floor(width)));
    return { n, cols, start: (c) => state.t0 + Math.floor((c * n) / cols) };
  }

  // ---------- heat maps ----------
  const maps = []; // {li, mi, canvas, legend, label}
  const inputTracks = []; // {f, canvas}
  function buildMaps() {
    const box = $('maps');
    box.innerHTML = '';
    maps.length = 0;
    layers.forEach((L, li) => {
      const head = el('div', { class: 'layer-head' });
      head.appendChild(el('h2', null, esc(L.name)));
      head.appendChild(el('span', null, esc(L.cell.toUpperCase() + ' · ' + L.units + ' units' + (L.go_backwards ? ' · go_backwards (step t reads input row T−1−t)' : '') + ' · rows: units in the unit list\'s order')));
      box.appendChild(head);
      if (!L.members.length) box.appendChild(el('p', { class: 'muted' }, 'Nothing per step was recorded for this layer (--record none).'));
      L.members.forEach((M, mi) => {
        const track = el('div', { class: 'track' });
        const label = el('div', { class: 'label heat-label' });
        label.innerHTML = '<b>' + esc(M.name) + '</b><span class="unit-ticks"></span>';
        const canvas = el('canvas', {
          class: 'plot heatmap', tabindex: '0', role: 'img',
          'data-layer': String(li), 'data-member': M.name,
          'aria-label': 'Heat map of ' + M.name + ' in layer ' + L.name + ', units by step',
        });
        const h = L.units * rowHeight(L.units);
        canvas.style.height = h + 2 + 'px';
        const legend = el('canvas', { class: 'legend', 'aria-label': 'Colour legend of ' + M.name });
        legend.style.height = Math.max(h + 2, 70) + 'px';
        track.append(label, canvas, legend);
        box.appendChild(track);
        const m = { li, mi, canvas, legend, label };
        maps.push(m);
        attachPointer(canvas, m);
        attachKeys(canvas, m);
      });
      const axis = el('div', { class: 'track' });
      axis.append(el('div'), el('div', { class: 'axis' }), el('div'));
      box.appendChild(axis);
    });
  }

  function sizeCanvas(c) {
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    return { w, h, dpr };
  }
  const scratch = document.createElement('canvas');
  let sums = new Float64Array(0), counts = new Uint32Array(0);
  /* Only maps on (or near) the screen are drawn; the others are marked and drawn when scrolled to. */
  function onScreen(c) {
    const r = c.getBoundingClientRect();
    return r.bottom > -200 && r.top < window.innerHeight + 200;
  }

  function drawMap(m) {
    const L = layers[m.li], M = L.members[m.mi];
    const { w, dpr } = sizeCanvas(m.canvas);
    const ctx = m.canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    const U = L.units, data = memberData(m.li, m.mi);
    const base = state.seq * S * U;
    const { cols, start } = columns(w * dpr);
    const order = orders[m.li];
    const lut = LUT[M.scale];
    const img = new ImageData(cols, U);
    const px = img.data;
    // Column means, reading each step's units contiguously (one pass over the visible steps only).
    if (sums.length < U) { sums = new Float64Array(U); counts = new Uint32Array(U); }
    const scale = 255 / (M.hi - M.lo || 1), lo = M.lo;
    // A layer shorter than the page's step axis (inputs of several lengths): its steps past the end are
    // left blank, not drawn as non-finite values.
    const ownSteps = L.input_index.length;
    for (let c = 0; c < cols; c++) {
      const a = start(c), b = Math.max(a + 1, start(c + 1));
      if (S0 + a >= ownSteps) {
        for (let r = 0; r < U; r++) px[(r * cols + c) * 4 + 3] = 0;
        continue;
      }
      sums.fill(0, 0, U); counts.fill(0, 0, U);
      // While the view is moving, wide columns average every `stride`-th step; the exact means follow
      // as soon as it stops (see settle()).
      const stride = fast && b - a > 8 ? Math.floor((b - a) / 4) : 1;
      for (let t = a; t < b; t += stride) {
        const o = base + t * U;
        for (let u = 0; u < U; u++) { const v = data[o + u]; if (v === v) { sums[u] += v; counts[u]++; } }
      }
      for (let r = 0; r < U; r++) {
        const u = order[r], k = counts[u];
        const o = (r * cols + c) * 4;
        if (k === 0) { px[o] = 255; px[o + 1] = 0; px[o + 2] = 255; px[o + 3] = 255; continue; }
        let i = Math.round((sums[u] / k - lo) * scale);
        i = (i < 0 ? 0 : i > 255 ? 255 : i) * 3;
        px[o] = lut[i]; px[o + 1] = lut[i + 1]; px[o + 2] = lut[i + 2]; px[o + 3] = 255;
      }
    }
    scratch.width = cols; scratch.height = U;
    scratch.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, m.canvas.width, m.canvas.height);
    ctx.drawImage(scratch, 0, 0, cols, U, 0, 0, m.canvas.width, m.canvas.height);
    const rowH = m.canvas.height / U, colW = m.canvas.width / cols;
    // Masked steps: hatched at the top edge.
    const mask = maskData(m.li);
    if (mask) {
      ctx.fillStyle = cssVar('--muted');
      for (let c = 0; c < cols; c++) {
        const a = start(c), b = Math.max(a + 1, start(c + 1));
        for (let t = a; t < b; t++) if (mask[state.seq * S + t]) { ctx.fillRect(c * colW, 0, Math.max(1, colW), 3 * dpr); break; }
      }
    }
    // Time range picked for Select.
    if (state.range && state.range.layer === m.li) {
      const x0 = ((state.range.from - state.t0) / (state.t1 - state.t0)) * m.canvas.width;
      const x1 = ((state.range.to - state.t0) / (state.t1 - state.t0)) * m.canvas.width;
      ctx.fillStyle = cssVar('--range');
      ctx.fillRect(x0, 0, x1 - x0, m.canvas.height);
    }
    // Selected units: outlined rows.
    const sel = state.selected[m.li];
    if (sel.size) {
      ctx.strokeStyle = cssVar('--accent');
      ctx.lineWidth = Math.max(1, dpr);
      order.forEach((u, r) => {
        if (!sel.has(u)) return;
        ctx.strokeRect(0.5, r * rowH + 0.5, m.canvas.width - 1, Math.max(1, rowH - 1));
        ctx.fillStyle = cssVar('--accent');
        ctx.fillRect(0, r * rowH, 4 * dpr, Math.max(1, rowH));
      });
    }
    const cur = state.cursor;
    if (cur && cur.li === m.li && cur.mi === m.mi && cur.step >= state.t0 && cur.step < state.t1) {
      const c = Math.floor(((cur.step - state.t0) * cols) / (state.t1 - state.t0));
      ctx.strokeStyle = isDark() ? '#fff' : '#000';
      ctx.lineWidth = 2 * dpr;
      ctx.strokeRect(c * colW, order.indexOf(cur.unit) * rowH, Math.max(2, colW), Math.max(2, rowH));
    }
    // Unit numbers beside the rows when they are tall enough to read, else a count.
    const ticks = m.label.querySelector('.unit-ticks');
    const cssRow = m.canvas.clientHeight / U;
    const key = order.join(',') + '|' + cssRow + '|' + Array.from(sel).join(',');
    if (ticks.dataset.key !== key) {
      ticks.dataset.key = key;
      if (cssRow >= 10) {
        ticks.className = 'unit-ticks rows';
        ticks.innerHTML = order.map((u, r) => '<span style="top:' + (1 + (r + 0.5) * cssRow).toFixed(1) + 'px"' + (sel.has(u) ? ' class="sel"' : '') + '>' + u + '</span>').join('');
      } else {
        ticks.className = 'unit-ticks';
        ticks.textContent = U + ' units' + (sel.size ? ', ' + sel.size + ' selected' : '');
      }
    }
    drawLegend(m);
  }

  function drawLegend(m) {
    const M = layers[m.li].members[m.mi];
    const { w, h, dpr } = sizeCanvas(m.legend);
    const ctx = m.legend.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const lut = LUT[M.scale];
    const top = 6, bot = h - 6, bw = 12;
    for (let y = top; y < bot; y++) {
      const i = Math.round((1 - (y - top) / (bot - top - 1)) * 255) * 3;
      ctx.fillStyle = 'rgb(' + lut[i] + ',' + lut[i + 1] + ',' + lut[i + 2] + ')';
      ctx.fillRect(0, y, bw, 1);
    }
    ctx.strokeStyle = cssVar('--border');
    ctx.strokeRect(0.5, top - 0.5, bw, bot - top + 1);
    ctx.fillStyle = cssVar('--fg');
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    const ticks = M.scale === 'diverging' ? [M.hi, 0, M.lo] : [M.hi, (M.hi + M.lo) / 2, M.lo];
    ticks.forEach((v, k) => {
      const y = top + (k / 2) * (bot - top);
      ctx.fillRect(bw, y, 3, 1);
      ctx.fillText(short(v, 3).replace(/^-/, '−'), bw + 7, y);
    });
  }

  // ---------- input charts ----------
  const MAX_FEATURE_CHARTS = 16;
  function buildInputs() {
    const box = $('inputs');
    box.innerHTML = '';
    inputTracks.length = 0;
    const shown = Math.min(F, MAX_FEATURE_CHARTS);
    const head = el('div', { class: 'layer-head' });
    head.appendChild(el('h2', null, 'Input'));
    head.appendChild(el('span', null, esc('features at the row each step of layer ' + layers[0].name + ' read' + (F > shown ? ' · first ' + shown + ' of ' + F + ' features' : ''))));
    box.appendChild(head);
    if (meta.tokens) {
      const track = el('div', { class: 'track' });
      const canvas = el('canvas', { class: 'plot tokens', 'data-feature': 'tokens', 'aria-label': 'Tokens' });
      canvas.style.height = '20px';
      track.append(el('div', { class: 'label' }, '<b>tokens</b>'), canvas, el('div'));
      box.appendChild(track);
      const t = { f: -1, canvas };
      inputTracks.push(t);
      attachPointer(canvas, t);
    }
    for (let f = 0; f < shown; f++) {
      const track = el('div', { class: 'track' });
      const canvas = el('canvas', { class: 'plot feature', 'data-feature': String(f), 'aria-label': 'Input feature ' + meta.feature_names[f] });
      canvas.style.height = '38px';
      const label = el('div', { class: 'label' }, '<b>' + esc(meta.feature_names[f]) + '</b><span class="rng"></span>');
      track.append(label, canvas, el('div'));
      box.appendChild(track);
      const t = { f, canvas, label };
      inputTracks.push(t);
      attachPointer(canvas, t);
    }
  }
  const rowAt = (li, t) => layers[li].input_index[S0 + t];
  function inputValue(seqIdx, row, f) { return inputData()[(seqIdx * T_IN + row) * F + f]; }

  function drawInput(t) {
    const { w, h, dpr } = sizeCanvas(t.canvas);
    const ctx = t.canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const { cols, start } = columns(w);
    const colW = w / cols;
    if (t.f < 0) {
      ctx.fillStyle = cssVar('--fg');
      ctx.font = '11px ui-monospace, monospace';
      ctx.textBaseline = 'middle';
      if (colW < 14) { ctx.fillStyle = cssVar('--muted'); ctx.fillText('zoom in to read the tokens', 4, h / 2); return; }
      const toks = meta.tokens[state.seq] || [];
      for (let c = 0; c < cols; c++) {
        const s = toks[rowAt(0, start(c))] || '';
        ctx.save(); ctx.beginPath(); ctx.rect(c * colW, 0, colW - 1, h); ctx.clip();
        ctx.fillText(s, c * colW + 2, h / 2); ctx.restore();
      }
      return;
    }
    let lo = Infinity, hi = -Infinity;
    for (let r = 0; r < T_IN; r++) { const v = inputValue(state.seq, r, t.f); if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!(hi > lo)) { hi = (Number.isFinite(lo) ? lo : 0) + 1; lo = hi - 2; }
    const y = (v) => h - 3 - ((v - lo) / (hi - lo)) * (h - 6);
    ctx.fillStyle = cssVar('--band');
    ctx.strokeStyle = cssVar('--line');
    ctx.lineWidth = 1.25;
    ctx.beginPath();
    for (let c = 0; c < cols; c++) {
      const a = start(c), b = Math.max(a + 1, start(c + 1));
      let mn = Infinity, mx = -Infinity, sum = 0;
      for (let s = a; s < b; s++) { const v = inputValue(state.seq, rowAt(0, s), t.f); mn = Math.min(mn, v); mx = Math.max(mx, v); sum += v; }
      if (b - a > 1) ctx.fillRect(c * colW, y(mx), Math.max(1, colW), Math.max(1, y(mn) - y(mx)));
      const x = (c + 0.5) * colW, v = sum / (b - a);
      if (c === 0) ctx.moveTo(x, y(v)); else ctx.lineTo(x, y(v));
    }
    ctx.stroke();
    t.label.querySelector('.rng').textContent = short(lo, 3) + ' … ' + short(hi, 3);
  }

  // ---------- view ----------
  let pending = false;
  let fast = false, settleTimer = 0;
  /* A redraw while the user drags, zooms or holds a key: approximate wide columns, exact 150 ms later. */
  function settle() {
    fast = true;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => { fast = false; drawAll(); }, 150);
  }
  function redraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawAll(); });
  }
  let lastDrawMs = 0;
  function drawAll(force) {
    const t = performance.now();
    for (const m of maps) {
      if (force || onScreen(m.canvas)) { drawMap(m); m.dirty = false; } else m.dirty = true;
    }
    for (const tr of inputTracks) drawInput(tr);
    drawAxes();
    drawViewText();
    drawPredCharts();
    drawExplain();
    lastDrawMs = performance.now() - t;
  }
  function drawAxes() {
    document.querySelectorAll('.axis').forEach((ax) => {
      const w = ax.clientWidth;
      ax.innerHTML = '';
      const n = state.t1 - state.t0;
      const ticks = Math.max(2, Math.min(10, Math.floor(w / 90)));
      for (let k = 0; k <= ticks; k++) {
        const step = state.t0 + Math.round((k * (n - 1)) / ticks);
        const span = el('span', null, String(S0 + step));
        span.style.left = (((step - state.t0 + 0.5) / n) * 100).toFixed(2) + '%';
        ax.appendChild(span);
      }
    });
  }
  function drawViewText() {
    const w = maps.length ? maps[0].canvas.clientWidth * (window.devicePixelRatio || 1) : 1000;
    const { n, cols } = columns(w);
    let s = 'Steps ' + (S0 + state.t0) + '–' + (S0 + state.t1 - 1) + ' of ' + meta.total_steps + ' (processing order)';
    if (cols < n) s += ' · each column is the mean of ' + (n / cols).toFixed(1) + ' steps (zoom in for single steps)';
    $('view-text').textContent = s;
  }
  function setView(t0, t1) {
    let n = Math.max(1, Math.min(S, Math.round(t1 - t0)));
    let a = Math.round(t0);
    a = Math.max(0, Math.min(S - n, a));
    state.t0 = a; state.t1 = a + n;
    redraw();
  }
  function zoom(factor, centre) {
    const n = state.t1 - state.t0;
    const c = centre === undefined ? state.t0 + n / 2 : centre;
    const m = Math.max(1, Math.min(S, n * factor));
    const frac = (c - state.t0) / n;
    setView(c - m * frac, c - m * frac + m);
  }
  function pan(frac) {
    const n = state.t1 - state.t0;
    const d = Math.sign(frac) * Math.max(1, Math.round(Math.abs(frac) * n));
    setView(state.t0 + d, state.t1 + d);
  }

  // ---------- pointer & tooltip ----------
  const tip = $('tooltip');
  function cellAt(m, x, y) {
    const L = layers[m.li];
    const w = m.canvas.clientWidth, h = m.canvas.clientHeight;
    const { cols, start } = columns(w * (window.devicePixelRatio || 1));
    const c = Math.max(0, Math.min(cols - 1, Math.floor((x / w) * cols)));
    const r = Math.max(0, Math.min(L.units - 1, Math.floor((y / h) * L.units)));
    return { a: start(c), b: Math.max(start(c) + 1, start(c + 1)), unit: orders[m.li][r] };
  }
  function featureRows(row) {
    const shown = Math.min(F, 12);
    let s = '<table>';
    for (let f = 0; f < shown; f++) s += '<tr><td class="muted">' + esc(meta.feature_names[f]) + '</td><td>' + exact(inputValue(state.seq, row, f)) + '</td></tr>';
    s += '</table>';
    if (F > shown) s += '<div class="muted">… and ' + (F - shown) + ' more features</div>';
    const tok = meta.tokens && meta.tokens[state.seq] && meta.tokens[state.seq][row];
    if (tok !== undefined && tok !== null) s = '<div>token <b>' + esc(tok) + '</b></div>' + s;
    return s;
  }
  function tooltipFor(m, a, b, unit) {
    const L = layers[m.li];
    const seq = meta.sequences[state.seq];
    if (m.mi === undefined) {
      const row = rowAt(0, a);
      return '<div><b>input</b> · sequence ' + seq + '</div><div>step ' + (S0 + a) + (b - a > 1 ? '–' + (S0 + b - 1) : '') + ' · input row ' + row + '</div>' + featureRows(row);
    }
    const M = L.members[m.mi];
    const data = memberData(m.li, m.mi);
    const U = L.units, base = state.seq * S * U;
    let s = '<div><b>' + esc(L.name) + '</b> · <b>' + esc(M.name) + '</b> · unit <span class="tt-unit">' + unit + '</span></div>';
    if (b - a === 1) {
      const row = L.input_index[S0 + a];
      const mask = maskData(m.li);
      s += '<div class="tt-value" data-exact="' + exact(data[base + a * U + unit]) + '">' + exact(data[base + a * U + unit]) + '</div>';
      s += '<div>sequence ' + seq + ' · step <span class="tt-step">' + (S0 + a) + '</span> · input row ' + row + (mask && mask[state.seq * S + a] ? ' · <b>masked</b> (state carried)' : '') + '</div>';
      s += featureRows(layers[0].input_index[S0 + a]);
    } else {
      let sum = 0, k = 0, mn = Infinity, mx = -Infinity;
      for (let t = a; t < b; t++) { const v = data[base + t * U + unit]; if (v === v) { sum += v; k++; mn = Math.min(mn, v); mx = Math.max(mx, v); } }
      s += '<div>mean <span class="tt-agg">' + short(sum / k, 7) + '</span> (min ' + short(mn, 6) + ', max ' + short(mx, 6) + ')</div>';
      s += '<div>sequence ' + seq + ' · steps <span class="tt-from">' + (S0 + a) + '</span>–<span class="tt-to">' + (S0 + b - 1) + '</span> (' + (b - a) + ' steps in this column; zoom in for exact values)</div>';
    }
    return s;
  }
  function showTip(html, cx, cy) {
    tip.innerHTML = html;
    tip.hidden = false;
    const r = tip.getBoundingClientRect();
    let x = cx + 14, y = cy + 14;
    if (x + r.width > window.innerWidth - 4) x = cx - r.width - 14;
    if (y + r.height > window.innerHeight - 4) y = cy - r.height - 14;
    tip.style.left = Math.max(4, x) + 'px';
    tip.style.top = Math.max(4, y) + 'px';
  }
  /* The drawing area of a canvas (its content box, inside the border) in client coordinates. */
  function plotBox(c) {
    const r = c.getBoundingClientRect();
    return { left: r.left + c.clientLeft, top: r.top + c.clientTop, width: c.clientWidth, height: c.clientHeight };
  }
  function attachPointer(canvas, m) {
    let drag = null;
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, t0: state.t0, t1: state.t1, shift: e.shiftKey, moved: false };
      if (!drag.shift) canvas.classList.add('dragging');
    });
    canvas.addEventListener('pointermove', (e) => {
      const rect = plotBox(canvas);
      const x = e.clientX - rect.left, y = e.clientY - rect.top;
      if (drag) {
        const dx = e.clientX - drag.x;
        if (Math.abs(dx) > 2) drag.moved = true;
        const per = (drag.t1 - drag.t0) / rect.width;
        if (drag.shift && m.mi !== undefined) {
          const a = Math.floor(drag.t0 + (drag.x - rect.left) * per), b = Math.floor(drag.t0 + x * per);
          setRange(m.li, Math.min(a, b), Math.max(a, b) + 1);
        } else if (!drag.shift) {
          const d = Math.round(-dx * per);
          settle();
          setView(drag.t0 + d, drag.t1 + d);
        }
      }
      if (m.mi !== undefined) {
        const c = cellAt(m, x, y);
        showTip(tooltipFor(m, c.a, c.b, c.unit), e.clientX, e.clientY);
      } else {
        const { cols, start } = columns(canvas.clientWidth);
        const col = Math.max(0, Math.min(cols - 1, Math.floor((x / rect.width) * cols)));
        showTip(tooltipFor(m, start(col), Math.max(start(col) + 1, start(col + 1))), e.clientX, e.clientY);
      }
    });
    const end = (e) => {
      if (drag && !drag.moved && !drag.shift && m.mi !== undefined && e.type === 'pointerup') {
        const rect = plotBox(canvas);
        const c = cellAt(m, e.clientX - rect.left, e.clientY - rect.top);
        if (e.altKey || e.metaKey || e.ctrlKey) toggleUnit(m.li, c.unit);
      }
      drag = null;
      canvas.classList.remove('dragging');
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    canvas.addEventListener('pointerleave', () => { if (!drag) tip.hidden = true; });
    canvas.addEventListener('wheel', (e) => {
      if (e.ctrlKey || e.metaKey) {
        e.preventDefault();
        const rect = plotBox(canvas);
        const centre = state.t0 + ((e.clientX - rect.left) / rect.width) * (state.t1 - state.t0);
        settle();
        zoom(e.deltaY > 0 ? 1.25 : 0.8, centre);
      } else if (Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        e.preventDefault();
        settle();
        pan(e.deltaX / canvas.clientWidth);
      }
    }, { passive: false });
    canvas.addEventListener('dblclick', (e) => {
      const rect = plotBox(canvas);
      zoom(0.5, state.t0 + ((e.clientX - rect.left) / rect.width) * (state.t1 - state.t0));
    });
  }
  function attachKeys(canvas, m) {
    canvas.addEventListener('focus', () => {
      if (!state.cursor || state.cursor.li !== m.li || state.cursor.mi !== m.mi)
        state.cursor = { li: m.li, mi: m.mi, step: state.t0, unit: orders[m.li][0] };
      cursorMoved(m);
    });
    canvas.addEventListener('blur', () => { tip.hidden = true; });
    canvas.addEventListener('keydown', (e) => {
      const cur = state.cursor;
      if (!cur) return;
      const order = orders[m.li];
      let r = order.indexOf(cur.unit);
      let handled = true;
      if (e.shiftKey && (e.key === 'ArrowLeft' || e.key === 'ArrowRight')) { pan(e.key === 'ArrowLeft' ? -0.1 : 0.1); }
      else if (e.key === 'ArrowLeft') cur.step = Math.max(0, cur.step - 1);
      else if (e.key === 'ArrowRight') cur.step = Math.min(S - 1, cur.step + 1);
      else if (e.key === 'ArrowUp') r = Math.max(0, r - 1);
      else if (e.key === 'ArrowDown') r = Math.min(order.length - 1, r + 1);
      else if (e.key === 'Enter' || e.key === ' ') toggleUnit(m.li, cur.unit);
      else handled = false;
      if (!handled) return;
      e.preventDefault();
      e.stopPropagation();
      cur.unit = order[r];
      if (cur.step < state.t0) setView(cur.step, cur.step + (state.t1 - state.t0));
      if (cur.step >= state.t1) setView(cur.step - (state.t1 - state.t0) + 1, cur.step + 1);
      cursorMoved(m);
    });
  }
  function cursorMoved(m) {
    const cur = state.cursor;
    const rect = plotBox(m.canvas);
    const n = state.t1 - state.t0;
    const x = rect.left + ((cur.step - state.t0 + 0.5) / n) * rect.width;
    const y = rect.top + ((orders[m.li].indexOf(cur.unit) + 0.5) / layers[m.li].units) * rect.height;
    showTip(tooltipFor(m, cur.step, cur.step + 1, cur.unit), x, y);
    redraw();
  }

  // ---------- sequences ----------
  function buildSequencePicker() {
    const sel = $('seq');
    meta.sequences.forEach((b, i) => sel.appendChild(el('option', { value: String(i) }, 'sequence ' + b)));
    sel.addEventListener('change', () => setSequence(Number(sel.value)));
    $('seq-prev').addEventListener('click', () => setSequence(state.seq - 1));
    $('seq-next').addEventListener('click', () => setSequence(state.seq + 1));
  }
  function setSequence(i) {
    if (!meta.sequences.length) return;
    i = Math.max(0, Math.min(meta.sequences.length - 1, i));
    state.seq = i;
    $('seq').value = String(i);
    document.querySelectorAll('#pred-table tbody tr').forEach((tr) => tr.classList.toggle('current', Number(tr.dataset.seq) === meta.sequences[i]));
    redraw();
  }

  // ---------- unit list ----------
  const SORTS = [['unit', 'Unit'], ['saturation', 'Saturation'], ['timescale', 'Timescale'], ['variance', 'Variance']];
  function buildUnitList() {
    const ls = $('unit-layer');
    layers.forEach((L, li) => ls.appendChild(el('option', { value: String(li) }, esc(L.name))));
    ls.addEventListener('change', () => { state.listLayer = Number(ls.value); renderUnitList(); });
    if (explainAttr.size) SORTS.push(['attribution', 'Attribution']);
    const bar = $('sort-buttons');
    for (const [key, name] of SORTS) {
      const b = el('button', { type: 'button', 'data-sort': key, 'aria-pressed': String(key === state.sortKey) }, name);
      b.addEventListener('click', () => sortUnits(key, key === state.sortKey ? -state.sortDir : (key === 'unit' ? 1 : -1)));
      bar.appendChild(b);
    }
    $('sel-clear').addEventListener('click', () => { state.selected[state.listLayer].clear(); selectionChanged(); });
  }
  function sortUnits(key, dir) {
    state.sortKey = key;
    state.sortDir = dir || 1;
    orders = layers.map((_, li) => unitOrder(li));
    document.querySelectorAll('#sort-buttons button').forEach((b) => {
      const on = b.dataset.sort === key;
      b.setAttribute('aria-pressed', String(on));
      b.textContent = SORTS.find((s) => s[0] === b.dataset.sort)[1] + (on ? (state.sortDir > 0 ? ' ↑' : ' ↓') : '');
    });
    renderUnitList();
    redraw();
  }
  function renderUnitList() {
    const li = state.listLayer, L = layers[li];
    const hasAttr = explainAttr.has(L.name);
    const thead = $('unit-table').tHead;
    thead.innerHTML = '<tr><th>Unit</th><th title="share of gate values below 0.1 or above 0.9">Sat.</th><th title="−1/ln(mean keep gate), steps">τ</th><th title="variance of state/h">Var.</th>' + (hasAttr ? '<th>Attr.</th>' : '') + '</tr>';
    const tb = $('unit-table').tBodies[0];
    const rows = [];
    const sel = state.selected[li];
    for (const u of orders[li]) {
      const s = L.unit_stats[u];
      const tau = statOf(li, u, 'timescale');
      rows.push('<tr data-unit="' + u + '" aria-selected="' + sel.has(u) + '"><td>' + u + '</td><td>' + (s.saturation === null ? '—' : (s.saturation * 100).toFixed(1) + '%') + '</td><td>' + (tau === null ? '—' : tau === Infinity ? '∞' : short(tau, 3)) + '</td><td>' + short(s.variance, 3) + '</td>' + (hasAttr ? '<td>' + short(explainAttr.get(L.name)[u], 3) + '</td>' : '') + '</tr>');
    }
    tb.innerHTML = rows.join('');
    const n = sel.size;
    $('sel-count').textContent = n ? n + ' unit' + (n > 1 ? 's' : '') + ' selected in ' + L.name : 'no units selected';
  }
  $('unit-table').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-unit]');
    if (tr) toggleUnit(state.listLayer, Number(tr.dataset.unit));
  });
  function toggleUnit(li, u) {
    const s = state.selected[li];
    if (s.has(u)) s.delete(u); else s.add(u);
    selectionChanged();
  }
  function selectionChanged() { renderUnitList(); redraw(); }

  // ---------- Select (LSTMVis) ----------
  function buildSelect() {
    const ls = $('sel-layer'), ms = $('sel-member');
    layers.forEach((L, li) => ls.appendChild(el('option', { value: String(li) }, esc(L.name))));
    const fill = () => {
      ms.innerHTML = '';
      layers[Number(ls.value)].members.forEach((M, mi) => ms.appendChild(el('option', { value: String(mi) }, esc(M.name))));
      const h = layers[Number(ls.value)].members.findIndex((M) => M.name === 'state/h');
      if (h >= 0) ms.value = String(h);
    };
    ls.addEventListener('change', fill);
    fill();
    $('sel-from').value = String(S0);
    $('sel-to').value = String(S0 + Math.min(S, 10));
    const readRange = () => {
      const a = Number($('sel-from').value) - S0, b = Number($('sel-to').value) - S0;
      setRange(Number(ls.value), Math.min(a, b), Math.max(a, b));
    };
    $('sel-from').addEventListener('change', readRange);
    $('sel-to').addEventListener('change', readRange);
    $('sel-pick').addEventListener('click', () => { readRange(); pickUnits(); });
    $('sel-find').addEventListener('click', () => { readRange(); findMatches(); });
  }
  function setRange(li, from, to) {
    from = Math.max(0, Math.min(S - 1, from));
    to = Math.max(from + 1, Math.min(S, to));
    state.range = { layer: li, from, to };
    $('sel-layer').value = String(li);
    $('sel-from').value = String(S0 + from);
    $('sel-to').value = String(S0 + to);
    redraw();
  }
  function selMember() { return { li: Number($('sel-layer').value), mi: Number($('sel-member').value) }; }
  function pickUnits() {
    const { li, mi } = selMember();
    const L = layers[li], U = L.units, th = Number($('sel-theta').value);
    if (!L.members[mi] || !state.range) return;
    const data = memberData(li, mi), base = state.seq * S * U;
    const sel = state.selected[li];
    sel.clear();
    for (let u = 0; u < U; u++) {
      let on = true;
      for (let t = state.range.from; t < state.range.to && on; t++) on = data[base + t * U + u] >= th;
      if (on) sel.add(u);
    }
    state.listLayer = li;
    $('unit-layer').value = String(li);
    $('sel-status').textContent = sel.size + ' unit' + (sel.size === 1 ? '' : 's') + ' ≥ ' + th + ' on ' + L.members[mi].name + ' throughout steps ' + (S0 + state.range.from) + '–' + (S0 + state.range.to - 1) + ' of sequence ' + meta.sequences[state.seq];
    selectionChanged();
  }
  /* Ranges where the same units do the same: maximal runs of steps where the Jaccard overlap between
   * the units ≥ θ and the selected units stays ≥ the minimum, at least the minimum length long (by
   * default half the selected range); ranked by the run's mean overlap, then longest first. */
  function findMatches(limit) {
    const { li, mi } = selMember();
    const L = layers[li], U = L.units, th = Number($('sel-theta').value), minJ = Number($('sel-minj').value);
    const Q = state.selected[li];
    const tb = $('match-table').tBodies[0];
    tb.innerHTML = '';
    if (!Q.size || !L.members[mi]) { $('sel-status').textContent = 'Select units first (pick them in the list, or by threshold).'; return []; }
    const data = memberData(li, mi);
    const want = state.range ? state.range.to - state.range.from : 1;
    const typed = Number($('sel-minlen').value);
    const minLen = $('sel-minlen').value !== '' && typed >= 1 ? Math.floor(typed) : Math.max(1, Math.floor(want / 2));
    const out = [];
    for (let b = 0; b < meta.sequences.length; b++) {
      let run = null;
      const close = (t) => { if (run && t - run.from >= minLen) out.push({ seq: b, from: run.from, to: t, j: run.sum / (t - run.from) }); run = null; };
      for (let t = 0; t < S; t++) {
        const base = (b * S + t) * U;
        let inter = 0, active = 0;
        for (let u = 0; u < U; u++) if (data[base + u] >= th) { active++; if (Q.has(u)) inter++; }
        const union = active + Q.size - inter;
        const j = union ? inter / union : 0;
        if (j >= minJ && j > 0) { if (!run) run = { from: t, sum: 0 }; run.sum += j; } else close(t);
      }
      close(S);
    }
    out.sort((x, y) => y.j - x.j || (y.to - y.from) - (x.to - x.from) || x.seq - y.seq || x.from - y.from);
    const shown = out.slice(0, limit || 200);
    tb.innerHTML = shown.map((r, k) => {
      const q = state.range && r.seq === state.seq && r.from <= state.range.from && r.to >= state.range.to;
      return '<tr data-seq="' + r.seq + '" data-from="' + r.from + '" data-to="' + r.to + '"><td>' + (k + 1) + '</td><td>' + meta.sequences[r.seq] + (q ? ' (query)' : '') + '</td><td>' + (S0 + r.from) + '–' + (S0 + r.to - 1) + '</td><td>' + (r.to - r.from) + '</td><td>' + r.j.toFixed(3) + '</td></tr>';
    }).join('');
    $('sel-status').textContent = out.length + ' range' + (out.length === 1 ? '' : 's') + ' where ' + Q.size + ' selected unit' + (Q.size === 1 ? '' : 's') + ' of ' + L.name + ' are ≥ ' + th + ' on ' + L.members[mi].name + ' (Jaccard ≥ ' + minJ + ', at least ' + minLen + ' step' + (minLen === 1 ? '' : 's') + ')' + (out.length > shown.length ? '; best ' + shown.length + ' shown' : '');
    return shown.map((r) => ({ sequence: meta.sequences[r.seq], from: S0 + r.from, to: S0 + r.to, jaccard: r.j }));
  }
  $('match-table').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-seq]');
    if (!tr) return;
    const from = Number(tr.dataset.from), to = Number(tr.dataset.to);
    setSequence(Number(tr.dataset.seq));
    const pad = Math.max(5, Math.round((to - from) * 0.5));
    setView(from - pad, to + pad);
  });

  // ---------- predictions ----------
  const P = meta.predictions;
  const NOUT = P.names.length;
  const NSEQ = meta.total_sequences;
  function buildPredictions() {
    const c = P.comparison;
    const v = $('verdict'), pv = $('pred-verdict');
    if (c) {
      v.hidden = false;
      v.className = 'badge ' + (c.passed ? 'ok' : 'bad');
      v.textContent = c.passed ? 'matches the framework' : 'MISMATCH';
      pv.innerHTML = (c.passed ? '<b style="color:var(--ok)">Match</b>: ' : '<b style="color:var(--bad)">Mismatch</b>: ') + (c.total - c.mismatches) + ' of ' + c.total + ' values within atol ' + c.atol + ' + rtol ' + c.rtol + '·|expected|; largest |ours − framework| = ' + short(c.max_abs_error, 3) + (c.passed ? '' : ' at index [' + c.worst_index.join(', ') + '] (ours ' + exact(c.worst_ours) + ', framework ' + exact(c.worst_expected) + ')') + '.';
    } else pv.textContent = 'No framework output was given (--expected), so there is no verdict.';
    const cols = [];
    for (let j = 0; j < NOUT; j++) {
      const n = esc(P.names[j]);
      cols.push('<th>' + n + ' ours</th>');
      if (P.expected) cols.push('<th>' + n + ' framework</th><th>|Δ|</th>');
      if (P.targets) cols.push('<th>' + n + ' target</th><th>residual</th>');
    }
    $('pred-table').tHead.innerHTML = '<tr><th>Sequence</th>' + cols.join('') + '</tr>';
    const LIMIT = 2000;
    const rows = [];
    for (let b = 0; b < Math.min(NSEQ, LIMIT); b++) {
      let r = '<tr data-seq="' + b + '"' + (b === meta.sequences[state.seq] ? ' class="current"' : '') + '><td>' + b + (meta.sequences.includes(b) ? '' : ' <span class="muted" title="not embedded">·</span>') + '</td>';
      for (let j = 0; j < NOUT; j++) {
        const k = b * NOUT + j, o = P.ours[k];
        r += '<td>' + (o === null ? 'NaN' : exact(o)) + '</td>';
        if (P.expected) {
          const e = P.expected[k];
          const d = o === null || e === null ? NaN : Math.abs(o - e);
          const bad = c && !(d <= c.atol + c.rtol * Math.abs(e));
          r += '<td>' + short(e, 7) + '</td><td' + (bad ? ' class="bad"' : '') + '>' + short(d, 3) + '</td>';
        }
        if (P.targets) {
          const t = P.targets[k];
          r += '<td>' + short(t, 7) + '</td><td>' + (o === null || t === null ? '—' : short(o - t, 4)) + '</td>';
        }
      }
      rows.push(r + '</tr>');
    }
    $('pred-table').tBodies[0].innerHTML = rows.join('') + (NSEQ > LIMIT ? '<tr><td colspan="99" class="muted">… ' + (NSEQ - LIMIT) + ' more sequences not listed</td></tr>' : '');
    $('pred-table').addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-seq]');
      if (!tr) return;
      const i = meta.sequences.indexOf(Number(tr.dataset.seq));
      if (i >= 0) setSequence(i);
    });
    const box = $('pred-charts');
    for (let j = 0; j < Math.min(NOUT, 4); j++) {
      box.appendChild(el('div', { class: 'chart-title' }, esc(P.names[j]) + ': <span style="color:var(--line)">━ ours</span>' + (P.expected ? ' <span style="color:var(--line2)">╍ framework</span>' : '') + (P.targets ? ' <span style="color:var(--line3)">● target</span>' : '') + ' · by sequence; the marker is the sequence shown above'));
      box.appendChild(el('canvas', { class: 'pred-chart', 'data-output': String(j) }));
    }
  }
  function drawPredCharts() {
    document.querySelectorAll('canvas.pred-chart').forEach((cv) => {
      const j = Number(cv.dataset.output);
      const { w, h, dpr } = sizeCanvas(cv);
      const ctx = cv.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const series = [P.ours, P.expected, P.targets];
      let lo = Infinity, hi = -Infinity;
      for (const s of series) if (s) for (let b = 0; b < NSEQ; b++) { const v = s[b * NOUT + j]; if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
      if (!(hi > lo)) { hi = (Number.isFinite(lo) ? lo : 0) + 1; lo = hi - 2; }
      const pad = (hi - lo) * 0.06;
      lo -= pad; hi += pad;
      const L = 56, R = 8, T = 8, B = 18;
      const x = (b) => L + (NSEQ > 1 ? (b / (NSEQ - 1)) * (w - L - R) : (w - L - R) / 2);
      const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (h - T - B);
      ctx.strokeStyle = cssVar('--grid'); ctx.fillStyle = cssVar('--muted'); ctx.font = '11px system-ui, sans-serif';
      ctx.textBaseline = 'middle';
      for (let k = 0; k <= 4; k++) { const v = lo + (k / 4) * (hi - lo); ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(w - R, y(v)); ctx.stroke(); ctx.fillText(short(v, 3), 4, y(v)); }
      ctx.textBaseline = 'top';
      ctx.fillText('sequence 0', L, h - B + 4);
      const last = 'sequence ' + (NSEQ - 1);
      ctx.fillText(last, w - R - ctx.measureText(last).width, h - B + 4);
      const cur = meta.sequences[state.seq];
      if (cur !== undefined) { ctx.fillStyle = cssVar('--accent-bg'); ctx.fillRect(x(cur) - 3, T, 6, h - T - B); }
      const line = (s, colour, dash) => {
        ctx.strokeStyle = colour; ctx.setLineDash(dash); ctx.lineWidth = 1.5; ctx.beginPath();
        let up = false;
        for (let b = 0; b < NSEQ; b++) { const v = s[b * NOUT + j]; if (v === null) { up = false; continue; } if (up) ctx.lineTo(x(b), y(v)); else ctx.moveTo(x(b), y(v)); up = true; }
        ctx.stroke(); ctx.setLineDash([]);
      };
      if (P.targets) { ctx.fillStyle = cssVar('--line3'); for (let b = 0; b < NSEQ; b++) { const v = P.targets[b * NOUT + j]; if (v !== null) ctx.fillRect(x(b) - 2, y(v) - 2, 4, 4); } }
      line(P.ours, cssVar('--line'), []);
      if (P.expected) line(P.expected, cssVar('--line2'), [5, 4]);
    });
  }

  // ---------- explain ----------
  const EXI = (meta.explain && meta.explain.inputs) || []; // several model inputs: one shown at a time
  const exState = { input: 0, method: null, initial: null };
  const exViews = []; // per input: {section, series, heat, legend, msg}
  const KIND_TEXT = { sequence: 'sequence', tokens: 'token ids', flat: 'flat (one step)', mask: 'read only as a mask: every attribution 0' };
  function analysisTable(box, a, scroll) {
    box.appendChild(el('h3', null, esc(a.title)));
    const t = el('table', { class: 'data-table' });
    t.innerHTML = '<thead><tr>' + a.columns.map((c) => '<th>' + esc(c) + '</th>').join('') + '</tr></thead><tbody>' + a.rows.map((r) => '<tr>' + r.map((c) => '<td>' + esc(c) + '</td>').join('') + '</tr>').join('') + '</tbody>';
    if (!scroll) { box.appendChild(t); return; }
    const wrap = el('div', { class: 'table-scroll' });
    wrap.appendChild(t);
    box.appendChild(wrap);
  }
  function buildExplain() {
    if (!meta.explain) return;
    $('explain-panel').hidden = false;
    const box = $('explain');
    if (meta.explain.attributions.length) box.appendChild(el('p', { class: 'muted' }, 'Unit attributions are in the unit list (sort by Attribution).'));
    const shared = meta.explain.analyses;
    if (!EXI.length) { for (const a of shared) analysisTable(box, a); return; }
    if (shared.length) analysisTable(box, shared[0]);
    const bar = el('div', { class: 'select-row explain-bar' });
    const isel = el('select', { id: 'explain-input', 'aria-label': 'Explained input' });
    EXI.forEach((inp, i) => isel.appendChild(el('option', { value: String(i) }, esc(inp.name + ' (' + KIND_TEXT[inp.kind] + ')'))));
    const msel = el('select', { id: 'explain-method', 'aria-label': 'Attribution method' });
    const methods = [];
    for (const inp of EXI) for (const m of inp.maps) if (!methods.includes(m.method)) methods.push(m.method);
    for (const m of methods) msel.appendChild(el('option', { value: m }, esc(m)));
    exState.method = methods.includes('integrated_gradients') ? 'integrated_gradients' : (methods[0] || null);
    if (exState.method) msel.value = exState.method;
    const il = el('label', { class: 'ctl' }, 'Input '); il.appendChild(isel);
    const ml = el('label', { class: 'ctl' }, 'Heat map '); ml.appendChild(msel);
    bar.append(il, ml, el('span', { class: 'muted' }, EXI.length + ' model inputs: integrated gradients move them together, so completeness sums over all'));
    msel.hidden = !methods.length; ml.hidden = !methods.length;
    box.appendChild(bar);
    EXI.forEach((inp, i) => {
      const sec = el('section', { class: 'explain-input', 'data-input': inp.name, 'aria-label': 'Input ' + inp.name });
      sec.hidden = i !== 0;
      sec.appendChild(el('h3', null, 'Input <b>' + esc(inp.name) + '</b> · ' + esc(KIND_TEXT[inp.kind]) + ' · ' + inp.steps + ' step' + (inp.steps === 1 ? '' : 's') + ' × ' + inp.feature_names.length + ' feature' + (inp.feature_names.length === 1 ? '' : 's')));
      const v = { section: sec, series: null, heat: null, legend: null, msg: el('p', { class: 'muted' }) };
      if (inp.maps.length && inp.kind !== 'mask') {
        v.series = el('canvas', { class: 'plot explain-series', 'aria-label': 'Input ' + inp.name + ' values' });
        v.series.style.height = inp.kind === 'tokens' ? '22px' : '60px';
        v.heat = el('canvas', { class: 'plot explain-heat', tabindex: '0', 'aria-label': 'Attribution heat map of input ' + inp.name });
        v.heat.style.height = inp.kind === 'flat' ? '28px' : Math.max(24, Math.min(320, inp.feature_names.length * 16)) + 'px';
        v.legend = el('div', { class: 'muted explain-legend' });
        sec.append(v.series, v.heat, v.legend);
        v.heat.addEventListener('mousemove', (e) => {
          const hit = exHit(i, e);
          if (!hit) { tip.hidden = true; return; }
          showTip('<div><b>' + esc(inp.name) + '</b> · sequence ' + meta.sequences[state.seq] + '</div><div>step ' + hit.t + (inp.kind === 'tokens' ? ' · <b>' + esc(hit.label) + '</b>' : ' · ' + esc(inp.feature_names[hit.f])) + '</div><div>' + esc(exState.method) + ': ' + exact(hit.v) + '</div>', e.clientX, e.clientY);
        });
        v.heat.addEventListener('mouseleave', () => { tip.hidden = true; });
      }
      sec.appendChild(v.msg);
      for (const a of inp.analyses) analysisTable(sec, a, true);
      box.appendChild(sec);
      exViews.push(v);
    });
    const IS = meta.explain.initial_state;
    if (IS) {
      // The model's initial-state terms, once after the inputs, for the page's selected sequence.
      const sec = el('section', { id: 'explain-initial-state', 'aria-label': 'Initial state terms' });
      const h = el('h3');
      const t = el('table', { class: 'data-table' });
      t.innerHTML = '<thead><tr>' + IS.columns.map((c) => '<th>' + esc(c) + '</th>').join('') + '</tr></thead><tbody></tbody>';
      const wrap = el('div', { class: 'table-scroll' });
      wrap.appendChild(t);
      sec.append(h, wrap);
      box.appendChild(sec);
      exState.initial = { title: h, body: t.tBodies[0] };
    }
    for (const a of shared.slice(1)) analysisTable(box, a);
    isel.addEventListener('change', () => setExplainInput(Number(isel.value)));
    msel.addEventListener('change', () => { exState.method = msel.value; drawExplain(); });
  }
  function setExplainInput(i) {
    exState.input = Math.max(0, Math.min(EXI.length - 1, i));
    $('explain-input').value = String(exState.input);
    exViews.forEach((v, k) => { v.section.hidden = k !== exState.input; });
    drawExplain();
  }
  /* The embedded attribution of input i, method, embedded sequence index b, step t, feature f (null: not embedded). */
  function exValue(i, method, b, t, f) {
    const inp = EXI[i], m = inp.maps.find((x) => x.method === method);
    if (!m || !m.values[b]) return null;
    const v = m.values[b][t * inp.feature_names.length + f];
    return v === undefined ? null : v;
  }
  function exHit(i, e) {
    const inp = EXI[i], c = exViews[i].heat, r = c.getBoundingClientRect();
    const F_ = inp.feature_names.length;
    const across = (e.clientX - r.left) / r.width, down = (e.clientY - r.top) / r.height;
    // A flat input (one step) lays its features across.
    const t = inp.kind === 'flat' ? 0 : Math.floor(across * inp.steps);
    const f = inp.kind === 'flat' ? Math.floor(across * F_) : Math.floor(down * F_);
    if (t < 0 || t >= inp.steps || f < 0 || f >= F_) return null;
    const v = exValue(i, exState.method, state.seq, t, f);
    if (v === null) return null;
    const labels = inp.step_labels[state.seq] || [];
    return { t, f, v, label: labels[t] || '' };
  }
  function drawInitialState() {
    const IS = meta.explain && meta.explain.initial_state, v = exState.initial;
    if (!IS || !v) return;
    const rows = IS.rows[state.seq] || [];
    v.title.textContent = IS.title + ', sequence ' + meta.sequences[state.seq];
    v.body.innerHTML = rows.map((r) => '<tr>' + r.map((c) => '<td>' + esc(c) + '</td>').join('') + '</tr>').join('');
  }
  function drawExplain() {
    drawInitialState();
    if (!EXI.length) return;
    const i = exState.input, inp = EXI[i], v = exViews[i];
    if (!v.heat) { v.msg.textContent = inp.kind === 'mask' ? 'This input is read only as a mask (a selector held at its value): every attribution is 0.' : 'No per-feature method was run (see the tables).'; return; }
    const b = state.seq, F_ = inp.feature_names.length, T_ = inp.steps;
    const vals = inp.values[b];
    const m = inp.maps.find((x) => x.method === exState.method);
    if (!vals || !m || !m.values[b]) {
      v.msg.textContent = !m ? 'Input ' + inp.name + ' has no ' + exState.method + ' map.' : 'Sequence ' + meta.sequences[b] + "'s attributions of this input are not in the page (see --sequence, --save).";
      v.series.hidden = true; v.heat.hidden = true; v.legend.textContent = '';
      return;
    }
    v.msg.textContent = ''; v.series.hidden = false; v.heat.hidden = false;
    const colW = (w) => w / T_;
    // The input above the map, on the same step axis: tokens as text, features as lines (one scale).
    {
      const { w, h, dpr } = sizeCanvas(v.series);
      const ctx = v.series.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const cw = colW(w);
      if (inp.kind === 'tokens') {
        const labels = inp.step_labels[b] || [];
        ctx.fillStyle = cssVar('--fg'); ctx.font = '11px ui-monospace, monospace'; ctx.textBaseline = 'middle';
        if (cw < 14) { ctx.fillStyle = cssVar('--muted'); ctx.fillText('too many steps to print the tokens: hover the map', 4, h / 2); }
        else for (let t = 0; t < T_; t++) { ctx.save(); ctx.beginPath(); ctx.rect(t * cw, 0, cw - 1, h); ctx.clip(); ctx.fillText(labels[t] || '', t * cw + 2, h / 2); ctx.restore(); }
      } else if (inp.kind === 'flat') {
        // One step: each feature's value as a bar from 0, features across as in the map below.
        let mv = 0;
        for (const x of vals) if (x !== null) mv = Math.max(mv, Math.abs(x));
        const fw = w / F_, y0 = h / 2, sc = (h / 2 - 4) / (mv || 1);
        ctx.strokeStyle = cssVar('--grid'); ctx.beginPath(); ctx.moveTo(0, y0); ctx.lineTo(w, y0); ctx.stroke();
        ctx.fillStyle = cssVar('--line');
        for (let f = 0; f < F_; f++) { const x = vals[f]; if (x === null) continue; const bh = x * sc; ctx.fillRect(f * fw + fw * 0.3, Math.min(y0, y0 - bh), fw * 0.4, Math.max(1, Math.abs(bh))); }
      } else {
        let lo = Infinity, hi = -Infinity;
        for (const x of vals) if (x !== null) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
        if (!(hi > lo)) { hi = (Number.isFinite(lo) ? lo : 0) + 1; lo = hi - 2; }
        const y = (x) => h - 3 - ((x - lo) / (hi - lo)) * (h - 6);
        ctx.strokeStyle = cssVar('--line'); ctx.fillStyle = cssVar('--line'); ctx.globalAlpha = F_ > 1 ? 0.7 : 1; ctx.lineWidth = 1.25;
        for (let f = 0; f < F_; f++) {
          ctx.beginPath();
          for (let t = 0; t < T_; t++) { const x = vals[t * F_ + f]; if (x === null) continue; const px = (t + 0.5) * cw; if (T_ === 1) ctx.fillRect(px - 2 + f * 4 - F_ * 2, y(x) - 2, 3, 3); else if (t === 0) ctx.moveTo(px, y(x)); else ctx.lineTo(px, y(x)); }
          ctx.stroke();
        }
        ctx.globalAlpha = 1;
      }
    }
    // The attribution map: features down, steps across, diverging colours symmetric about 0.
    const { w, h, dpr } = sizeCanvas(v.heat);
    const ctx = v.heat.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let mx = 0;
    for (const x of m.values[b]) if (x !== null) mx = Math.max(mx, Math.abs(x));
    const lut = LUT.diverging, flat = inp.kind === 'flat';
    const cw = flat ? w / F_ : colW(w), rh = flat ? h : h / F_;
    const place = (t, f) => (flat ? [f * cw, 0] : [t * cw, f * rh]);
    for (let t = 0; t < T_; t++) for (let f = 0; f < F_; f++) {
      const x = m.values[b][t * F_ + f];
      if (x === null) { ctx.fillStyle = cssVar('--grid'); } else {
        const k = Math.max(0, Math.min(255, Math.round(((x / (mx || 1)) + 1) * 127.5))) * 3;
        ctx.fillStyle = 'rgb(' + lut[k] + ',' + lut[k + 1] + ',' + lut[k + 2] + ')';
      }
      const [px, py] = place(t, f);
      ctx.fillRect(px, py, Math.ceil(cw), Math.ceil(rh));
    }
    if ((flat ? cw >= 30 : rh >= 11) && F_ > 1) {
      ctx.font = '10px ui-monospace, monospace'; ctx.textBaseline = 'middle'; ctx.fillStyle = cssVar('--fg');
      ctx.strokeStyle = cssVar('--bg'); ctx.lineWidth = 3;
      for (let f = 0; f < F_; f++) { const [px, py] = place(0, f); ctx.strokeText(inp.feature_names[f], px + 3, py + rh / 2); ctx.fillText(inp.feature_names[f], px + 3, py + rh / 2); }
    }
    v.legend.textContent = exState.method + ' of input ' + inp.name + ', sequence ' + meta.sequences[b] + ': blue negative, red positive, ±' + short(mx, 3) + ' at full colour' + (flat ? ' · one step, ' + F_ + ' features across' : ' · ' + T_ + ' step' + (T_ === 1 ? '' : 's') + ' across' + (F_ > 1 ? ', ' + F_ + ' features down' : '')) + ' · hover for the exact value';
  }

  // ---------- theme, keys, help ----------
  function setTheme(t) {
    document.documentElement.setAttribute('data-theme', t);
    makeLuts();
    drawAll();
  }
  $('theme').addEventListener('click', () => setTheme(isDark() ? 'light' : 'dark'));
  if (window.matchMedia) window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { makeLuts(); redraw(); });
  $('help-btn').addEventListener('click', () => { const h = $('help'); h.hidden = !h.hidden; $('help-btn').setAttribute('aria-expanded', String(!h.hidden)); });
  $('zoom-in').addEventListener('click', () => zoom(0.5));
  $('zoom-out').addEventListener('click', () => zoom(2));
  $('zoom-fit').addEventListener('click', () => setView(0, S));
  $('pan-left').addEventListener('click', () => pan(-0.25));
  $('pan-right').addEventListener('click', () => pan(0.25));
  document.addEventListener('keydown', (e) => {
    const tag = (e.target && e.target.tagName) || '';
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.repeat) settle();
    let handled = true;
    switch (e.key) {
      case 'ArrowLeft': pan(e.shiftKey ? -0.5 : -0.1); break;
      case 'ArrowRight': pan(e.shiftKey ? 0.5 : 0.1); break;
      case '+': case '=': zoom(0.5); break;
      case '-': case '_': zoom(2); break;
      case '0': setView(0, S); break;
      case '[': case 'PageUp': setSequence(state.seq - 1); break;
      case ']': case 'PageDown': setSequence(state.seq + 1); break;
      case 'Home': setView(0, state.t1 - state.t0); break;
      case 'End': setView(S - (state.t1 - state.t0), S); break;
      case 't': setTheme(isDark() ? 'light' : 'dark'); break;
      case '?': $('help-btn').click(); break;
      case 'Escape': state.selected.forEach((s) => s.clear()); state.range = null; tip.hidden = true; selectionChanged(); break;
      default: handled = false;
    }
    if (handled) e.preventDefault();
  });
  window.addEventListener('resize', redraw);
  let scrollPending = false;
  window.addEventListener('scroll', () => {
    if (scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => {
      scrollPending = false;
      for (const m of maps) if (m.dirty && onScreen(m.canvas)) { drawMap(m); m.dirty = false; }
    });
  }, { passive: true });

  // ---------- start ----------
  $('title').textContent = meta.title ? meta.title : 'rnntrace report';
  if (meta.notes.length) { const n = $('notes'); n.hidden = false; n.innerHTML = meta.notes.map((s) => '<p>' + esc(s) + '</p>').join(''); }
  buildSequencePicker();
  buildUnitList();
  buildInputs();
  buildMaps();
  buildSelect();
  buildPredictions();
  buildExplain();
  sortUnits('unit', 1);
  drawAll();

  // ---------- script API ----------
  function layerIndex(layer) {
    if (typeof layer === 'number' && Number.isInteger(layer) && layer >= 0 && layer < layers.length) return layer;
    const i = layers.findIndex((L) => L.name === layer);
    if (i < 0) throw new RangeError('no layer ' + JSON.stringify(layer) + '; the report has ' + layers.map((L, k) => k + ' (' + L.name + ')').join(', '));
    return i;
  }
  window.rnntrace = Object.freeze({
    version: 1,
    meta,
    /** The exact recorded number of `member` ("gates/i", "state/c", … as in the .npz trace) of `layer`
     *  (index or name) at sequence `sequence` (0-based, as in the input), processing step `step` (0-based)
     *  and unit `unit`; null when the run recorded it but the report left it out (see meta.notes). */
    value(layer, member, sequence, step, unit) {
      const li = layerIndex(layer), L = layers[li];
      const mi = L.members.findIndex((M) => M.name === member);
      if (mi < 0) throw new RangeError('layer ' + L.name + ' has no member ' + JSON.stringify(member) + '; it has ' + L.members.map((M) => M.name).join(', '));
      for (const [v, n, what] of [[sequence, meta.total_sequences, 'sequence'], [step, meta.total_steps, 'step'], [unit, L.units, 'unit']])
        if (!Number.isInteger(v) || v < 0 || v >= n) throw new RangeError(what + ' ' + v + ' is out of range 0..' + n);
      const b = meta.sequences.indexOf(sequence);
      if (b < 0 || step < S0 || step >= S0 + S) return null;
      return memberData(li, mi)[(b * S + (step - S0)) * L.units + unit];
    },
    /** The visible window of processing steps, [from, to). */
    view: () => ({ from: S0 + state.t0, to: S0 + state.t1 }),
    setView: (from, to) => { setView(from - S0, to - S0); drawAll(true); },
    sequence: () => meta.sequences[state.seq],
    setSequence: (b) => { const i = meta.sequences.indexOf(b); if (i < 0) throw new RangeError('sequence ' + b + ' is not in the report'); setSequence(i); drawAll(true); },
    /** Units of `layer` in heat-map row order (top first). */
    unitOrder: (layer) => orders[layerIndex(layer)].slice(),
    sortUnits: (key, dir) => { sortUnits(key, dir); drawAll(true); },
    selected: (layer) => Array.from(state.selected[layerIndex(layer)]).sort((a, b) => a - b),
    selectUnits: (layer, units) => { const li = layerIndex(layer); state.selected[li] = new Set(units); state.listLayer = li; $('unit-layer').value = String(li); selectionChanged(); drawAll(true); },
    /** LSTMVis select: matches of the selected units ≥ theta on member over steps [from, to) of the shown sequence. */
    findMatches: (layer, member, theta, from, to, minJaccard, minLength) => {
      const li = layerIndex(layer);
      $('sel-layer').value = String(li); $('sel-layer').dispatchEvent(new Event('change'));
      $('sel-member').value = String(layers[li].members.findIndex((M) => M.name === member));
      $('sel-theta').value = String(theta);
      if (minJaccard !== undefined) $('sel-minj').value = String(minJaccard);
      $('sel-minlen').value = minLength === undefined ? '' : String(minLength);
      setRange(li, from - S0, to - S0);
      return findMatches();
    },
    /** Redraws and returns the milliseconds it took: the maps on screen, or every map with `all`;
     *  `moving` measures the redraw used while the view is being dragged or zoomed. */
    redrawMs: (all, moving) => { fast = !!moving; drawAll(!!all); fast = false; return lastDrawMs; },
    /** Several model inputs: the names in the explain section, the shown one, switching it, and the
     *  embedded attribution of `input` (name) by `method` at `sequence` (as in the input), step, feature. */
    explainInputs: () => EXI.map((x) => x.name),
    explainInput: () => (EXI.length ? EXI[exState.input].name : null),
    setExplainInput: (name) => { const i = EXI.findIndex((x) => x.name === name); if (i < 0) throw new RangeError('no input ' + JSON.stringify(name) + '; the report has ' + EXI.map((x) => x.name).join(', ')); setExplainInput(i); },
    attribution: (input, method, sequence, step, feature) => {
      const i = EXI.findIndex((x) => x.name === input);
      if (i < 0) throw new RangeError('no input ' + JSON.stringify(input));
      const b = meta.sequences.indexOf(sequence);
      return b < 0 ? null : exValue(i, method, b, step, feature);
    },
    /** Draws every map now, on screen or not (for reading pixels). */
    drawEverything: () => drawAll(true),
  });
  document.documentElement.setAttribute('data-ready', '1');
})();

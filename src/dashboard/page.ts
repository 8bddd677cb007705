/**
 * The dashboard page: one self-contained HTML document (inline CSS and vanilla JS, no
 * external URL, no build step). It polls `/api/status` every second and `/api/dlq` every
 * two seconds. Every server-supplied text reaches the DOM through `textContent`; the access
 * token lives in sessionStorage only and is sent as `Authorization: Bearer` on every API call
 * (with a token configured, the reads that show data need it as much as the actions).
 * The script and style are exported apart so the server can pin them by hash in its
 * Content-Security-Policy; they contain no backtick and no `${`.
 */
export const DASHBOARD_STYLE = `
:root { --bg: #f4f6f9; --panel: #ffffff; --ink: #17202b; --muted: #5b6776; --line: #dde3ea;
  --accent: #1f6feb; --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --capt: #1f6feb; --appl: #1a7f37; --lag: #8250df; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; background: var(--bg); color: var(--ink); }
header { display: flex; align-items: center; gap: 16px; padding: 12px 20px; background: #17202b; color: #fff; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .conn { display: flex; align-items: center; gap: 6px; font-size: 13px; color: #c9d1d9; }
header .spacer { flex: 1; }
.dot { width: 10px; height: 10px; border-radius: 50%; background: #8b949e; display: inline-block; }
.dot.live { background: #3fb950; }
.dot.down { background: #f85149; }
main { padding: 16px 20px 32px; display: grid; gap: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(155px, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; margin-top: 2px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .value.mono { font-size: 18px; line-height: 33px; }
.card .sub { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.value.warn { color: var(--warn); }
.value.bad { color: var(--bad); }
.changed { animation: flash 0.9s ease-out; }
@keyframes flash { from { background: #fff3b0; } to { background: transparent; } }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.panel h2 { font-size: 15px; margin: 0 0 8px; display: flex; align-items: center; gap: 10px; }
.panel h2 .hint { font-weight: 400; color: var(--muted); font-size: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 16px; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-size: 11px; fill: #5b6776; }
.legend { display: flex; gap: 14px; font-size: 12px; color: var(--muted); }
.swatch { display: inline-block; width: 12px; height: 3px; vertical-align: middle; margin-right: 4px; }
.swatch.capt { background: var(--capt); }
.swatch.appl { background: var(--appl); }
.swatch.lag { background: var(--lag); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; }
td.err { max-width: 420px; overflow-wrap: anywhere; }
td.mono, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.empty { color: var(--muted); padding: 10px 8px; }
button { font: inherit; padding: 4px 10px; border-radius: 6px; border: 1px solid var(--line); background: #f6f8fa; cursor: pointer; }
button:hover { background: #eef1f4; }
button:disabled { opacity: .5; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger { color: var(--bad); }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin-bottom: 8px; }
.toolbar input { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 6px; width: 240px; }
.toolbar input.ask { border-color: var(--warn); box-shadow: 0 0 0 3px #ffd8a8; }
.toolbar .spacer { flex: 1; }
.toolbar .state { color: var(--muted); font-size: 12px; }
.message { padding: 8px 10px; border-radius: 6px; margin-bottom: 8px; display: none; }
.message.show { display: block; }
.message.error { background: #ffebe9; color: #82071e; border: 1px solid #ffcecb; }
.message.info { background: #ddf4ff; color: #0a3069; border: 1px solid #b6e3ff; }
.muted { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; padding: 0 20px 20px; }
`;

export const DASHBOARD_SCRIPT = `
(function () {
  'use strict';
  var TOKEN_KEY = 'syncline.dashboard.token';
  var SVGNS = 'http://www.w3.org/2000/svg';
  var state = { token: null, dlqSignature: '', busy: false, actions: null, lastOk: 0 };
  try { state.token = window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { state.token = null; }

  function byId(id) { return document.getElementById(id); }
  function node(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function setText(id, text, flash) {
    var e = byId(id);
    if (!e) return;
    text = String(text);
    if (e.textContent === text) return;
    e.textContent = text;
    if (flash) { e.classList.remove('changed'); void e.offsetWidth; e.classList.add('changed'); }
  }
  function int(n) { return Math.round(Number(n) || 0).toLocaleString('en-US'); }
  function rate(n) { n = Number(n) || 0; return n >= 100 ? int(n) : n.toFixed(1); }
  function seconds(s) {
    s = Number(s) || 0;
    if (s < 10) return s.toFixed(2) + ' s';
    if (s < 120) return s.toFixed(1) + ' s';
    if (s < 7200) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }
  function bytes(b) {
    b = Number(b) || 0;
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (b >= 1024 && i < units.length - 1) { b = b / 1024; i++; }
    return (i === 0 ? String(Math.round(b)) : b.toFixed(1)) + ' ' + units[i];
  }
  function age(iso) {
    var t = Date.parse(iso);
    if (!isFinite(t)) return '';
    return seconds(Math.max(0, (Date.now() - t) / 1000)) + ' ago';
  }

  function request(method, path, body) {
    var headers = { 'accept': 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (state.token) headers['authorization'] = 'Bearer ' + state.token;
    return fetch(path, { method: method, headers: headers, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (res) {
        return res.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
          return { status: res.status, data: data };
        });
      });
  }

  function chart(svgId, series, unit) {
    var svg = byId(svgId);
    if (!svg) return;
    var W = 600, H = 180, L = 52, R = 8, T = 10, B = 22;
    var n = 0, top = 0, i, j;
    for (i = 0; i < series.length; i++) {
      n = Math.max(n, series[i].values.length);
      for (j = 0; j < series[i].values.length; j++) top = Math.max(top, series[i].values[j]);
    }
    top = niceTop(top);
    var parts = [];
    function add(tag, attrs, text) {
      var e = document.createElementNS(SVGNS, tag);
      for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
      if (text !== undefined) e.textContent = text;
      parts.push(e);
      return e;
    }
    for (i = 0; i <= 4; i++) {
      var y = T + (H - T - B) * (1 - i / 4);
      add('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#dde3ea', 'stroke-width': 1 });
      var v = top * i / 4;
      add('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, axisNumber(v, top / 4) + (unit === 's' ? ' s' : ''));
    }
    add('text', { x: L, y: H - 4 }, n > 1 ? '-' + Math.round(n * state.intervalS) + ' s' : '');
    add('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, 'now');
    for (i = 0; i < series.length; i++) {
      var vals = series[i].values, pts = [];
      var cap = Math.max(n - 1, 1);
      for (j = 0; j < vals.length; j++) {
        var x = L + (W - L - R) * ((n - vals.length + j) / cap);
        var yy = T + (H - T - B) * (1 - (top > 0 ? vals[j] / top : 0));
        pts.push(x.toFixed(1) + ',' + yy.toFixed(1));
      }
      if (pts.length > 0) add('polyline', { points: pts.join(' '), fill: 'none', stroke: series[i].color, 'stroke-width': 2, 'stroke-linejoin': 'round' });
    }
    svg.replaceChildren.apply(svg, parts);
  }
  function axisNumber(v, step) {
    var d = 0;
    while (d < 4 && Math.abs(Math.round(step * Math.pow(10, d)) - step * Math.pow(10, d)) > 1e-6) d++;
    return Number(v.toFixed(d)).toLocaleString('en-US', { maximumFractionDigits: d });
  }
  function niceTop(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var steps = [1, 2, 4, 6, 8, 10];
    for (var i = 0; i < steps.length; i++) if (v <= steps[i] * p) return steps[i] * p;
    return 10 * p;
  }

  function renderStatus(s) {
    state.intervalS = (s.sample_interval_ms || 1000) / 1000;
    setText('lag', seconds(s.lag_seconds), true);
    byId('lag').className = 'value' + (s.lag_seconds >= 30 ? ' bad' : s.lag_seconds >= 5 ? ' warn' : '');
    setText('captured-rate', rate(s.throughput.captured_per_s), true);
    setText('applied-rate', rate(s.throughput.applied_per_s), true);
    setText('captured-total', int(s.totals.captured) + ' captured', true);
    setText('applied-total', int(s.totals.applied) + ' applied', true);
    setText('dup-rate', (s.duplicate_rate * 100).toFixed(2) + ' %', true);
    setText('dup-sub', int(s.totals.stale) + ' stale, ' + int(s.totals.duplicate) + ' duplicate');
    setText('dlq-depth', s.dlq.enabled ? int(s.dlq.depth) : 'off', true);
    byId('dlq-depth').className = 'value' + (s.dlq.depth > 0 ? ' warn' : '');
    setText('dlq-age', !s.dlq.enabled ? 'dead_letter.enabled: false' : s.dlq.depth > 0 ? 'oldest ' + seconds(s.dlq.oldest_age_seconds) : (s.dlq.note || 'empty'));
    if (s.dlq.blocked_tables && s.dlq.blocked_tables.length > 0) {
      setText('dlq-age', 'held tables (fix the target): ' + s.dlq.blocked_tables.join(', '));
      byId('dlq-depth').className = 'value bad';
    }
    setText('wal', bytes(s.slot.retained_wal_bytes), true);
    setText('capture-lsn', s.lsn.capture || '-', true);
    setText('apply-lsn', s.lsn.apply || '-', true);
    setText('totals', 'published ' + int(s.totals.published) + ' · consumed ' + int(s.totals.consumed) + ' · retried ' + int(s.totals.retried) +
      ' · dead-lettered ' + int(s.totals.deadlettered) + ' · uptime ' + seconds(s.uptime_seconds));
    setText('updated', 'live · ' + new Date(s.time).toLocaleTimeString());

    var samples = s.samples || [];
    chart('lag-chart', [{ color: '#8250df', values: samples.map(function (p) { return p.lag_seconds; }) }], 's');
    chart('rate-chart', [
      { color: '#1f6feb', values: samples.map(function (p) { return p.captured_per_s; }) },
      { color: '#1a7f37', values: samples.map(function (p) { return p.applied_per_s; }) }
    ], '/s');

    var body = byId('tables-body');
    var rows = [];
    (s.tables || []).forEach(function (t) {
      var tr = node('tr');
      tr.appendChild(node('td', t.table, 'mono'));
      tr.appendChild(node('td', int(t.captured), 'num'));
      tr.appendChild(node('td', int(t.applied), 'num'));
      tr.appendChild(node('td', int(t.stale), 'num'));
      tr.appendChild(node('td', int(t.duplicate), 'num'));
      tr.appendChild(node('td', t.lag_seconds === null ? '-' : seconds(t.lag_seconds), 'num'));
      rows.push(tr);
    });
    if (rows.length === 0) {
      var tr = node('tr');
      var td = node('td', 'no change captured or applied yet', 'empty');
      td.colSpan = 6;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);

    state.actions = s.actions;
    setText('actions-state', s.actions.enabled ? (state.token ? 'token set for this tab' : 'enter the access token to replay or purge') : (s.actions.hint || 'actions disabled'));
  }

  function renderDlq(d) {
    var entries = d.entries || [];
    var sig = JSON.stringify(entries.map(function (e) { return [e.id, e.attempts, e.error]; })) + String(d.enabled);
    if (sig === state.dlqSignature) return;
    state.dlqSignature = sig;
    var body = byId('dlq-body');
    var rows = entries.map(function (e) {
      var tr = node('tr');
      tr.setAttribute('data-id', e.id);
      tr.appendChild(node('td', e.id, 'num'));
      tr.appendChild(node('td', e.table, 'mono'));
      tr.appendChild(node('td', e.key, 'mono'));
      tr.appendChild(node('td', e.op || 'UNDECODABLE'));
      tr.appendChild(node('td', e.commit_lsn || '-', 'mono'));
      var err = node('td', null, 'err');
      err.appendChild(node('div', e.error_code, 'mono'));
      err.appendChild(node('div', e.error));
      tr.appendChild(err);
      tr.appendChild(node('td', e.attempts, 'num'));
      var first = node('td', age(e.first_failed_at));
      first.title = e.first_failed_at;
      tr.appendChild(first);
      var actions = node('td');
      var replay = node('button', 'Replay', 'primary');
      replay.type = 'button';
      replay.setAttribute('data-action', 'replay');
      replay.addEventListener('click', function () { act('replay', [e.id]); });
      var purge = node('button', 'Purge', 'danger');
      purge.type = 'button';
      purge.setAttribute('data-action', 'purge');
      purge.addEventListener('click', function () { act('purge', [e.id]); });
      actions.appendChild(replay);
      actions.appendChild(document.createTextNode(' '));
      actions.appendChild(purge);
      tr.appendChild(actions);
      return tr;
    });
    if (rows.length === 0) {
      var tr = node('tr');
      var td = node('td', d.enabled === false ? 'the dead-letter queue is disabled (dead_letter.enabled: false)' : 'the dead-letter queue is empty', 'empty');
      td.colSpan = 9;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
    state.shownIds = entries.map(function (e) { return e.id; });
    byId('replay-all').disabled = entries.length === 0;
    byId('purge-all').disabled = entries.length === 0;
  }

  function message(kind, text) {
    var m = byId('dlq-message');
    m.textContent = text;
    m.className = 'message show ' + kind;
  }

  function askToken() {
    var input = byId('token');
    input.classList.add('ask');
    input.focus();
  }

  function act(kind, ids) {
    if (state.busy || ids.length === 0) return;
    if (kind === 'purge' && !window.confirm('Purge ' + ids.length + ' dead-letter entr' + (ids.length === 1 ? 'y' : 'ies') + '? The changes are deleted, not applied.')) return;
    if (!state.token) askToken();
    state.busy = true;
    setButtons(true);
    message('info', (kind === 'replay' ? 'Replaying ' : 'Purging ') + ids.length + ' entr' + (ids.length === 1 ? 'y' : 'ies') + '...');
    request('POST', '/api/dlq/' + kind, { ids: ids }).then(function (r) {
      var d = r.data || {};
      if (r.status === 401) {
        forgetToken();
        askToken();
        message('error', kind + ' refused (401): ' + (d.error || 'missing or wrong access token') + '. Enter the access token above.');
      } else if (r.status !== 200) {
        message('error', kind + ' failed (' + r.status + '): ' + (d.error || 'unexpected answer'));
      } else if (kind === 'purge') {
        message('info', 'Purged ' + d.purged + ' entr' + (d.purged === 1 ? 'y' : 'ies') + '.');
      } else if (d.ok) {
        message('info', 'Replayed ' + d.replayed + (d.stale ? ' (' + d.stale + ' already superseded at the target)' : '') + '.');
      } else {
        var first = d.failed && d.failed[0];
        message('error', 'Replayed ' + d.replayed + ', failed again ' + (d.failed ? d.failed.length : 0) + ', held back ' + (d.held ? d.held.length : 0) +
          (first ? ': #' + first.id + ' ' + first.error : ''));
      }
    }).catch(function (err) {
      message('error', kind + ' failed: ' + (err && err.message ? err.message : String(err)));
    }).then(function () {
      state.busy = false;
      setButtons(false);
      state.dlqSignature = '';
      pollDlq(true);
    });
  }

  function setButtons(disabled) {
    var buttons = document.querySelectorAll('#dlq-body button, #replay-all, #purge-all');
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = disabled;
  }

  function saveToken(value) {
    state.token = value || null;
    try {
      if (state.token) window.sessionStorage.setItem(TOKEN_KEY, state.token); else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage unavailable: keep it in memory for this page */ }
    byId('token').value = '';
    byId('token').classList.remove('ask');
    setText('actions-state', state.token ? 'token set for this tab' : 'enter the access token to replay or purge');
  }
  function forgetToken() { saveToken(null); }

  function pollStatus() {
    request('GET', '/api/status').then(function (r) {
      if (r.status === 401) {
        // A token is configured: the data is for its holders only.
        byId('conn-dot').className = 'dot down';
        setText('updated', state.token ? 'wrong access token: enter monitoring.dashboard_token below' : 'access token required: enter monitoring.dashboard_token below');
        byId('token').classList.add('ask');
        return;
      }
      if (r.status !== 200 || !r.data) throw new Error('status ' + r.status);
      renderStatus(r.data);
      state.lastOk = Date.now();
      byId('conn-dot').className = 'dot live';
    }).catch(function () {
      byId('conn-dot').className = 'dot down';
      setText('updated', 'disconnected: retrying');
    }).then(function () {
      window.setTimeout(pollStatus, 1000);
    });
  }
  function pollDlq(once) {
    request('GET', '/api/dlq?limit=200').then(function (r) {
      if (r.status === 200 && r.data) renderDlq(r.data);
    }).catch(function () { /* shown by the status poll */ }).then(function () {
      if (once === true) return;
      window.setTimeout(pollDlq, 2000);
    });
  }

  byId('token-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var v = byId('token').value.trim();
    if (v) { saveToken(v); message('info', 'Token saved for this browser tab.'); state.dlqSignature = ''; pollDlq(true); }
  });
  byId('token-forget').addEventListener('click', function () { forgetToken(); message('info', 'Token forgotten.'); });
  byId('replay-all').addEventListener('click', function () { act('replay', (state.shownIds || []).slice()); });
  byId('purge-all').addEventListener('click', function () { act('purge', (state.shownIds || []).slice()); });
  byId('dlq-refresh').addEventListener('click', function () { state.dlqSignature = ''; pollDlq(true); });
  state.intervalS = 1;
  pollStatus();
  pollDlq();
})();
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>syncline dashboard</title>
<style>${DASHBOARD_STYLE}</style>
</head>
<body>
<header>
  <h1>syncline</h1>
  <span class="conn"><span id="conn-dot" class="dot"></span><span id="updated">connecting...</span></span>
  <span class="spacer"></span>
  <a class="conn" href="/metrics">/metrics</a>
</header>
<main>
  <section class="cards" aria-label="summary">
    <div class="card"><div class="label">Max lag</div><div id="lag" class="value">-</div><div class="sub">source commit to applied</div></div>
    <div class="card"><div class="label">Captured / s</div><div id="captured-rate" class="value">-</div><div id="captured-total" class="sub">-</div></div>
    <div class="card"><div class="label">Applied / s</div><div id="applied-rate" class="value">-</div><div id="applied-total" class="sub">-</div></div>
    <div class="card"><div class="label">Duplicate rate (60 s)</div><div id="dup-rate" class="value">-</div><div id="dup-sub" class="sub">-</div></div>
    <div class="card"><div class="label">Dead-letter queue</div><div id="dlq-depth" class="value">-</div><div id="dlq-age" class="sub">-</div></div>
    <div class="card"><div class="label">Slot retained WAL</div><div id="wal" class="value">-</div><div class="sub">WAL the source keeps for the slot</div></div>
    <div class="card"><div class="label">Capture LSN</div><div id="capture-lsn" class="value mono">-</div><div class="sub">confirmed to the slot</div></div>
    <div class="card"><div class="label">Apply LSN</div><div id="apply-lsn" class="value mono">-</div><div class="sub">newest applied commit</div></div>
  </section>
  <section class="charts">
    <div class="panel">
      <h2>Lag <span class="legend"><span><span class="swatch lag"></span>max seconds behind the source</span></span></h2>
      <svg id="lag-chart" class="chart" viewBox="0 0 600 180" role="img" aria-label="lag over the last minutes"></svg>
    </div>
    <div class="panel">
      <h2>Throughput <span class="legend"><span><span class="swatch capt"></span>captured / s</span><span><span class="swatch appl"></span>applied / s</span></span></h2>
      <svg id="rate-chart" class="chart" viewBox="0 0 600 180" role="img" aria-label="changes per second over the last minutes"></svg>
    </div>
  </section>
  <section class="panel">
    <h2>Tables</h2>
    <table id="tables">
      <thead><tr><th>table</th><th class="num">captured</th><th class="num">applied</th><th class="num">stale</th><th class="num">duplicate</th><th class="num">lag</th></tr></thead>
      <tbody id="tables-body"></tbody>
    </table>
  </section>
  <section class="panel" id="dlq">
    <h2>Dead-letter queue <span class="hint">changes that could not be applied; fix the cause, then replay</span></h2>
    <form id="token-form" class="toolbar" autocomplete="off">
      <label for="token">Access token</label>
      <input id="token" type="password" placeholder="monitoring.dashboard_token" autocomplete="off">
      <button id="token-save" type="submit">Use token</button>
      <button id="token-forget" type="button">Forget</button>
      <span id="actions-state" class="state"></span>
      <span class="spacer"></span>
      <button id="dlq-refresh" type="button">Refresh</button>
      <button id="replay-all" type="button" disabled>Replay all shown</button>
      <button id="purge-all" type="button" class="danger" disabled>Purge all shown</button>
    </form>
    <div id="dlq-message" class="message" role="status" aria-live="polite"></div>
    <table>
      <thead><tr><th class="num">id</th><th>table</th><th>key</th><th>op</th><th>commit LSN</th><th>error</th><th class="num">attempts</th><th>first failed</th><th>actions</th></tr></thead>
      <tbody id="dlq-body"><tr><td class="empty" colspan="9">loading...</td></tr></tbody>
    </table>
  </section>
</main>
<footer id="totals"></footer>
<script>${DASHBOARD_SCRIPT}</script>
</body>
</html>
`;

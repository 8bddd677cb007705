/**
 * The dashboard page's script. It polls `/api/status` every second and `/api/dlq` every two
 * seconds. Every server-supplied text reaches the DOM through `textContent`; the access token
 * lives in sessionStorage only and is sent as `Authorization: Bearer` on every API call (with
 * a token configured, the reads that show data need it as much as the actions).
 *
 * scripts/build-dashboard.mjs compiles it with tsconfig.ui.json and inlines it into
 * index.html, and the server pins it by hash in the page's Content-Security-Policy: so it is
 * one module that imports only types, and it registers its handlers with addEventListener
 * (the policy allows no inline handler).
 */
import type { DlqAction, DlqActionRequest, DlqListResponse, ErrorResponse, PurgeResponse, ReplayResponse, StatusResponse } from '../api.js';

const TOKEN_KEY = 'syncline.dashboard.token';
const SVGNS = 'http://www.w3.org/2000/svg';

function element<T extends Element>(id: string, type: abstract new () => T): T {
  const e = document.getElementById(id);
  if (!(e instanceof type)) throw new Error(`the page has no ${type.name} #${id}`);
  return e;
}
const byId = (id: string): HTMLElement => element(id, HTMLElement);

/** The page's elements that the script fills or listens to (index.html). */
const page = {
  connDot: byId('conn-dot'),
  updated: byId('updated'),
  lag: byId('lag'),
  capturedRate: byId('captured-rate'),
  appliedRate: byId('applied-rate'),
  capturedTotal: byId('captured-total'),
  appliedTotal: byId('applied-total'),
  dupRate: byId('dup-rate'),
  dupSub: byId('dup-sub'),
  dlqDepth: byId('dlq-depth'),
  dlqAge: byId('dlq-age'),
  wal: byId('wal'),
  captureLsn: byId('capture-lsn'),
  applyLsn: byId('apply-lsn'),
  totals: byId('totals'),
  lagChart: element('lag-chart', SVGSVGElement),
  rateChart: element('rate-chart', SVGSVGElement),
  tablesBody: byId('tables-body'),
  schemasBody: byId('schemas-body'),
  schemasNote: byId('schemas-note'),
  dlqBody: byId('dlq-body'),
  dlqMessage: byId('dlq-message'),
  actionsState: byId('actions-state'),
  tokenForm: element('token-form', HTMLFormElement),
  token: element('token', HTMLInputElement),
  tokenForget: byId('token-forget'),
  dlqRefresh: byId('dlq-refresh'),
  replayAll: element('replay-all', HTMLButtonElement),
  purgeAll: element('purge-all', HTMLButtonElement),
};

const state = {
  token: storedToken(),
  /** What the dead-letter table shows, to rebuild it only when that changed. */
  dlqSignature: '',
  /** The same for the schema versions. */
  schemasSignature: '',
  /** A replay or purge is running. */
  busy: false,
  /** Seconds between two points of the charts (the server's sample interval). */
  intervalS: 1,
  /** Ids of the dead-letter entries shown: what "Replay all shown" and "Purge all shown" act on. */
  shownIds: [] as string[],
};

function storedToken(): string | null {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function node(tag: string, text?: string | number | null, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function setText(e: HTMLElement, text: string, flash = false): void {
  if (e.textContent === text) return;
  e.textContent = text;
  if (flash) {
    e.classList.remove('changed');
    // Reading the layout restarts the animation when the class comes back.
    void e.offsetWidth;
    e.classList.add('changed');
  }
}

function int(n: number): string {
  return Math.round(n || 0).toLocaleString('en-US');
}
function rate(n: number): string {
  n = n || 0;
  return n >= 100 ? int(n) : n.toFixed(1);
}
function seconds(s: number): string {
  s = s || 0;
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function bytes(b: number): string {
  b = b || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b = b / 1024;
    i++;
  }
  return `${i === 0 ? String(Math.round(b)) : b.toFixed(1)} ${units[i] ?? ''}`;
}
function age(iso: string): string {
  const t = Date.parse(iso);
  if (!isFinite(t)) return '';
  return `${seconds(Math.max(0, (Date.now() - t) / 1000))} ago`;
}
function entries(n: number): string {
  return n === 1 ? 'entry' : 'entries';
}

/** An API answer: the body of a 200, or the status and the error text of anything else. */
type Answer<T> = { ok: true; status: number; data: T } | { ok: false; status: number; error: string | undefined };

async function request<T>(method: 'GET' | 'POST', path: string, body?: DlqActionRequest): Promise<Answer<T>> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const res = await fetch(path, {
    method,
    headers,
    cache: 'no-store',
    credentials: 'omit',
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    return { ok: false, status: res.status, error: text };
  }
  // The server is this process, built from the same api.ts: a 200 carries T.
  if (res.status === 200 && data !== null) return { ok: true, status: res.status, data: data as T };
  const error = data !== null && typeof data === 'object' ? (data as Partial<ErrorResponse>).error : undefined;
  return { ok: false, status: res.status, error: typeof error === 'string' ? error : undefined };
}

interface Series {
  color: string;
  values: readonly number[];
}

function chart(svg: SVGSVGElement, series: readonly Series[], unit: 's' | '/s'): void {
  // The viewBox's width and height, and the left, right, top and bottom margins.
  const [W, H, L, R, T, B] = [600, 180, 52, 8, 10, 22];
  let n = 0;
  let top = 0;
  for (const s of series) {
    n = Math.max(n, s.values.length);
    for (const v of s.values) top = Math.max(top, v);
  }
  top = niceTop(top);
  const parts: SVGElement[] = [];
  const add = (tag: string, attrs: Record<string, string | number>, text?: string): void => {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    parts.push(e);
  };
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * (1 - i / 4);
    add('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#dde3ea', 'stroke-width': 1 });
    add('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, axisNumber((top * i) / 4, top / 4) + (unit === 's' ? ' s' : ''));
  }
  add('text', { x: L, y: H - 4 }, n > 1 ? `-${Math.round(n * state.intervalS)} s` : '');
  add('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, 'now');
  const cap = Math.max(n - 1, 1);
  for (const s of series) {
    const points = s.values.map((v, j) => {
      const x = L + (W - L - R) * ((n - s.values.length + j) / cap);
      const y = T + (H - T - B) * (1 - (top > 0 ? v / top : 0));
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (points.length > 0) add('polyline', { points: points.join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-linejoin': 'round' });
  }
  svg.replaceChildren(...parts);
}
/** An axis label with as many decimals as the step needs (at most 4). */
function axisNumber(v: number, step: number): string {
  let d = 0;
  while (d < 4 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6) d++;
  return Number(v.toFixed(d)).toLocaleString('en-US', { maximumFractionDigits: d });
}
/** The smallest of 1, 2, 4, 6, 8, 10 times a power of ten that is at least `v`. */
function niceTop(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 4, 6, 8, 10]) if (v <= step * p) return step * p;
  return 10 * p;
}

function renderStatus(s: StatusResponse): void {
  state.intervalS = (s.sample_interval_ms || 1000) / 1000;
  setText(page.lag, seconds(s.lag_seconds), true);
  page.lag.className = `value${s.lag_seconds >= 30 ? ' bad' : s.lag_seconds >= 5 ? ' warn' : ''}`;
  setText(page.capturedRate, rate(s.throughput.captured_per_s), true);
  setText(page.appliedRate, rate(s.throughput.applied_per_s), true);
  setText(page.capturedTotal, `${int(s.totals.captured)} captured`, true);
  setText(page.appliedTotal, `${int(s.totals.applied)} applied`, true);
  setText(page.dupRate, `${(s.duplicate_rate * 100).toFixed(2)} %`, true);
  setText(page.dupSub, `${int(s.totals.stale)} stale, ${int(s.totals.duplicate)} duplicate`);
  setText(page.dlqDepth, s.dlq.enabled ? int(s.dlq.depth) : 'off', true);
  page.dlqDepth.className = `value${s.dlq.depth > 0 ? ' warn' : ''}`;
  setText(
    page.dlqAge,
    !s.dlq.enabled ? 'dead_letter.enabled: false' : s.dlq.depth > 0 ? `oldest ${seconds(s.dlq.oldest_age_seconds)}` : s.dlq.note || 'empty',
  );
  if (s.dlq.blocked_tables.length > 0) {
    setText(page.dlqAge, `held tables (fix the target): ${s.dlq.blocked_tables.join(', ')}`);
    page.dlqDepth.className = 'value bad';
  }
  setText(page.wal, bytes(s.slot.retained_wal_bytes), true);
  setText(page.captureLsn, s.lsn.capture || '-', true);
  setText(page.applyLsn, s.lsn.apply || '-', true);
  setText(
    page.totals,
    `published ${int(s.totals.published)} · consumed ${int(s.totals.consumed)} · retried ${int(s.totals.retried)}` +
      ` · dead-lettered ${int(s.totals.deadlettered)} · uptime ${seconds(s.uptime_seconds)}`,
  );
  setText(page.updated, `live · ${new Date(s.time).toLocaleTimeString()}`);

  chart(page.lagChart, [{ color: '#8250df', values: s.samples.map((p) => p.lag_seconds) }], 's');
  chart(
    page.rateChart,
    [
      { color: '#1f6feb', values: s.samples.map((p) => p.captured_per_s) },
      { color: '#1a7f37', values: s.samples.map((p) => p.applied_per_s) },
    ],
    '/s',
  );

  const rows = s.tables.map((t) => {
    const tr = node('tr');
    tr.append(
      node('td', t.table, 'mono'),
      node('td', int(t.captured), 'num'),
      node('td', int(t.applied), 'num'),
      node('td', int(t.stale), 'num'),
      node('td', int(t.duplicate), 'num'),
      node('td', t.lag_seconds === null ? '-' : seconds(t.lag_seconds), 'num'),
    );
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow('no change captured or applied yet', 6));
  page.tablesBody.replaceChildren(...rows);

  renderSchemas(s.schemas);
  setText(page.actionsState, s.actions.enabled ? tokenState() : s.actions.hint || 'actions disabled');
}

function renderSchemas(schemas: StatusResponse['schemas']): void {
  if (schemas.note) setText(page.schemasNote, schemas.note);
  const signature = JSON.stringify(schemas.versions);
  if (signature === state.schemasSignature) return;
  state.schemasSignature = signature;
  const rows = schemas.versions.map((v) => {
    const tr = node('tr');
    const changes = node('td', null, 'mono');
    if (v.changes.length === 0) changes.append(node('span', v.version === 1 ? 'first definition' : '-', 'muted'));
    for (const line of v.changes) changes.append(node('div', line));
    tr.append(node('td', v.table, 'mono'), node('td', v.version, 'num'), node('td', v.first_lsn, 'mono'), node('td', new Date(v.recorded_at).toLocaleString()), changes);
    tr.dataset.table = v.table;
    tr.dataset.version = String(v.version);
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow('no definition recorded yet', 5));
  page.schemasBody.replaceChildren(...rows);
}

function emptyRow(text: string, columns: number): HTMLElement {
  const tr = node('tr');
  const td = document.createElement('td');
  td.textContent = text;
  td.className = 'empty';
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

function renderDlq(d: DlqListResponse): void {
  const sig = JSON.stringify(d.entries.map((e) => [e.id, e.attempts, e.error])) + String(d.enabled);
  if (sig === state.dlqSignature) return;
  state.dlqSignature = sig;
  const rows = d.entries.map((e) => {
    const tr = node('tr');
    tr.setAttribute('data-id', e.id);
    const err = node('td', null, 'err');
    err.append(node('div', e.error_code, 'mono'), node('div', e.error));
    const first = node('td', age(e.first_failed_at));
    first.title = e.first_failed_at;
    const actions = node('td');
    actions.append(actionButton('replay', 'Replay', 'primary', e.id), ' ', actionButton('purge', 'Purge', 'danger', e.id));
    tr.append(
      node('td', e.id, 'num'),
      node('td', e.table, 'mono'),
      node('td', e.key, 'mono'),
      node('td', e.op || 'UNDECODABLE'),
      node('td', e.commit_lsn || '-', 'mono'),
      err,
      node('td', e.attempts, 'num'),
      first,
      actions,
    );
    return tr;
  });
  if (rows.length === 0) {
    rows.push(emptyRow(d.enabled ? 'the dead-letter queue is empty' : 'the dead-letter queue is disabled (dead_letter.enabled: false)', 9));
  }
  page.dlqBody.replaceChildren(...rows);
  state.shownIds = d.entries.map((e) => e.id);
  page.replayAll.disabled = d.entries.length === 0;
  page.purgeAll.disabled = d.entries.length === 0;
}

function actionButton(kind: DlqAction, label: string, cls: string, id: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.textContent = label;
  button.className = cls;
  button.type = 'button';
  button.setAttribute('data-action', kind);
  button.addEventListener('click', () => void act(kind, [id]));
  return button;
}

function showMessage(kind: 'info' | 'error', text: string): void {
  page.dlqMessage.textContent = text;
  page.dlqMessage.className = `message show ${kind}`;
}

function askToken(): void {
  page.token.classList.add('ask');
  page.token.focus();
}

async function act(kind: DlqAction, ids: readonly string[]): Promise<void> {
  if (state.busy || ids.length === 0) return;
  if (kind === 'purge' && !window.confirm(`Purge ${ids.length} dead-letter ${entries(ids.length)}? The changes are deleted, not applied.`)) return;
  if (!state.token) askToken();
  state.busy = true;
  setButtons(true);
  showMessage('info', `${kind === 'replay' ? 'Replaying' : 'Purging'} ${ids.length} ${entries(ids.length)}...`);
  try {
    const body = { ids: [...ids] };
    const r = kind === 'purge' ? await request<PurgeResponse>('POST', '/api/dlq/purge', body) : await request<ReplayResponse>('POST', '/api/dlq/replay', body);
    if (!r.ok) {
      if (r.status === 401) {
        forgetToken();
        askToken();
        showMessage('error', `${kind} refused (401): ${r.error || 'missing or wrong access token'}. Enter the access token above.`);
      } else {
        showMessage('error', `${kind} failed (${r.status}): ${r.error || 'unexpected answer'}`);
      }
    } else if ('purged' in r.data) {
      showMessage('info', `Purged ${r.data.purged} ${entries(r.data.purged)}.`);
    } else if (r.data.ok) {
      showMessage('info', `Replayed ${r.data.replayed}${r.data.stale ? ` (${r.data.stale} already superseded at the target)` : ''}.`);
    } else {
      const { replayed, failed, held } = r.data;
      const first = failed[0];
      showMessage('error', `Replayed ${replayed}, failed again ${failed.length}, held back ${held.length}${first ? `: #${first.id} ${first.error}` : ''}`);
    }
  } catch (err) {
    showMessage('error', `${kind} failed: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    state.busy = false;
    setButtons(false);
    refreshDlq();
  }
}

function setButtons(disabled: boolean): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>('#dlq-body button, #replay-all, #purge-all')) b.disabled = disabled;
}

function tokenState(): string {
  return state.token ? 'token set for this tab' : 'enter the access token to replay or purge';
}

function saveToken(value: string | null): void {
  state.token = value || null;
  try {
    if (state.token) window.sessionStorage.setItem(TOKEN_KEY, state.token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage unavailable: keep it in memory for this page.
  }
  page.token.value = '';
  page.token.classList.remove('ask');
  setText(page.actionsState, tokenState());
}
function forgetToken(): void {
  saveToken(null);
}

async function pollStatus(): Promise<void> {
  try {
    const r = await request<StatusResponse>('GET', '/api/status');
    if (r.status === 401) {
      // A token is configured: the data is for its holders only.
      page.connDot.className = 'dot down';
      setText(page.updated, state.token ? 'wrong access token: enter monitoring.dashboard_token below' : 'access token required: enter monitoring.dashboard_token below');
      page.token.classList.add('ask');
      return;
    }
    if (!r.ok) throw new Error(`status ${r.status}`);
    renderStatus(r.data);
    page.connDot.className = 'dot live';
  } catch {
    page.connDot.className = 'dot down';
    setText(page.updated, 'disconnected: retrying');
  } finally {
    window.setTimeout(() => void pollStatus(), 1000);
  }
}

/** Refreshes the dead-letter table every 2 s, or `once` (after an action, or on request). */
async function pollDlq(once = false): Promise<void> {
  try {
    const r = await request<DlqListResponse>('GET', '/api/dlq?limit=200');
    if (r.ok) renderDlq(r.data);
  } catch {
    // Shown by the status poll.
  }
  if (!once) window.setTimeout(() => void pollDlq(), 2000);
}

function refreshDlq(): void {
  state.dlqSignature = '';
  void pollDlq(true);
}

page.tokenForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const v = page.token.value.trim();
  if (v) {
    saveToken(v);
    showMessage('info', 'Token saved for this browser tab.');
    refreshDlq();
  }
});
page.tokenForget.addEventListener('click', () => {
  forgetToken();
  showMessage('info', 'Token forgotten.');
});
page.replayAll.addEventListener('click', () => void act('replay', state.shownIds.slice()));
page.purgeAll.addEventListener('click', () => void act('purge', state.shownIds.slice()));
page.dlqRefresh.addEventListener('click', refreshDlq);
void pollStatus();
void pollDlq();

// LexiFlow operator console. Plain ES2020, no dependencies, CSP-safe: the DOM is built with
// createElement/textContent only (every byte from the server is untrusted), no inline styles
// (classes and SVG geometry attributes only), no eval.
'use strict';
(() => {
  const POLL_MS = 10000;
  const SPARK_POINTS = 30;
  const API = '/console/api/v1';
  const SVGNS = 'http://www.w3.org/2000/svg';

  const S = {
    csrf: null,
    user: null,
    timer: null,
    busy: new Set(),
    users: new Map(), // user id -> {email, firstName, lastName, role}
    spark: new Map(), // queue -> {last, deltas[]}
    deadSig: '',
    deadAt: 0,
    breakersMissing: false,
  };

  // ---------- DOM helpers ----------
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...kids) {
    const n = document.createElement(tag);
    setProps(n, props);
    for (const k of kids.flat()) if (k != null && k !== false) n.append(k instanceof Node ? k : String(k));
    return n;
  }

  function svg(tag, attrs, ...kids) {
    const n = document.createElementNS(SVGNS, tag);
    setProps(n, attrs);
    for (const k of kids) if (k != null) n.append(k instanceof Node ? k : String(k));
    return n;
  }

  function setProps(n, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'text') n.textContent = String(v);
      else if (k === 'testid') n.setAttribute('data-testid', String(v));
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) n.addEventListener(ev, fn);
      else if (k === 'style' || /^on/i.test(k)) throw new Error('refused attribute ' + k);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function button(label, testid, onClick, cls) {
    return el('button', { type: 'button', testid, class: cls, on: { click: onClick } }, label);
  }

  // Keyed update of a container's children: nodes are reused by key so that polling does not
  // replace elements (and buttons) under the user's pointer.
  function reconcile(container, items, key, create, update) {
    const old = new Map();
    for (const c of Array.from(container.children)) old.set(c.dataset.key, c);
    let prev = null;
    for (const it of items) {
      const k = String(key(it));
      let node = old.get(k);
      if (node) old.delete(k);
      else {
        node = create(it);
        node.dataset.key = k;
      }
      update(node, it);
      const want = prev ? prev.nextSibling : container.firstChild;
      if (node !== want) container.insertBefore(node, want);
      prev = node;
    }
    for (const n of old.values()) n.remove();
  }

  function panelError(section, err) {
    const p = $(section).querySelector('.panel-error');
    if (!p) return;
    p.hidden = !err;
    p.textContent = err ? (err.message || String(err)) : '';
  }

  let statusTimer = null;
  function say(msg, kind) {
    const s = $('status');
    s.textContent = msg;
    s.className = 'status ' + (kind || '');
    clearTimeout(statusTimer);
    if (kind === 'ok') statusTimer = setTimeout(() => { if (s.textContent === msg) s.textContent = ''; }, 6000);
  }

  // ---------- formatting ----------
  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(s) {
    if (!s) return '—';
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  const fmtNum = (n, digits = 1) => (typeof n === 'number' && Number.isFinite(n) ? (Number.isInteger(n) ? String(n) : n.toFixed(digits)) : '—');
  function fmtBytes(b) {
    if (typeof b !== 'number') return '—';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
  }
  const clip = (s, n) => { s = String(s ?? ''); return s.length > n ? s.slice(0, n - 1) + '…' : s; };
  const shortId = (s) => String(s ?? '').slice(0, 8);
  const userName = (u) => [u.firstName, u.lastName].filter(Boolean).join(' ') || u.email || '(unknown)';

  // ---------- HTTP ----------
  class HttpError extends Error {
    constructor(status, body) {
      const e = body && body.error;
      super((e && e.message) || `request failed (HTTP ${status})`);
      this.status = status;
      this.code = (e && e.code) || null;
      this.body = body;
    }
  }

  // Every console call: same-origin cookie, CSRF header, JSON in and out. `opts.raw` returns
  // the Response (for downloads); `opts.okStatus` lists extra statuses whose body is data.
  async function call(method, url, body, opts = {}) {
    const headers = { accept: opts.raw ? '*/*' : 'application/json' };
    if (S.csrf) headers['x-csrf-token'] = S.csrf;
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    const ok = res.ok || (opts.okStatus || []).includes(res.status);
    if (ok && opts.raw) return res;
    if (res.status === 204) return null;
    let json = null;
    try { json = await res.json(); } catch (_) { json = null; }
    if (!ok) {
      if (res.status === 401 && !opts.auth && S.user) signedOut('Your console session ended; sign in again.');
      throw new HttpError(res.status, json);
    }
    return json;
  }
  const data = (j) => (j && 'data' in j ? j.data : j);
  const q = encodeURIComponent;

  // Runs a refresher at most once at a time.
  async function once(key, fn) {
    if (S.busy.has(key)) return;
    S.busy.add(key);
    try { await fn(); } finally { S.busy.delete(key); }
  }

  // A button action: disables the button, reports the outcome, then refreshes the panel.
  async function act(btn, label, fn, after) {
    if (btn) btn.disabled = true;
    try {
      await fn();
      say(`${label}: done.`, 'ok');
    } catch (e) {
      say(`${label}: ${e.message}`, 'err');
    } finally {
      if (btn) btn.disabled = false;
    }
    if (after && S.user) await after().catch(() => {});
  }

  // ---------- session ----------
  async function boot() {
    wire();
    try {
      // 204: nobody is signed in (not an error, so the browser logs nothing).
      const j = await call('GET', '/console/session', undefined, { auth: true });
      if (j === null) showLogin('');
      else signedIn(data(j));
    } catch (e) {
      showLogin(e.status === 401 ? '' : `Cannot reach the console: ${e.message}`);
    }
  }

  function wire() {
    $('login-form').addEventListener('submit', onLogin);
    $('signout').addEventListener('click', onSignout);
    $('audit-verify').addEventListener('click', (ev) => verifyAudit(ev.currentTarget));
    $('audit-csv').addEventListener('click', (ev) => downloadCsv(ev.currentTarget));
    $('audit-refresh').addEventListener('click', () => refreshAudit());
    $('sessions-refresh').addEventListener('click', () => refreshSessions());
    $('webhooks-refresh').addEventListener('click', () => refreshWebhooks());
    document.addEventListener('visibilitychange', () => {
      if (!S.user) return;
      if (document.hidden) stopPolling();
      else startPolling();
    });
  }

  function showLogin(msg) {
    $('console-view').hidden = true;
    $('who').hidden = true;
    $('signout').hidden = true;
    $('login-view').hidden = false;
    const err = $('login-error');
    err.hidden = !msg;
    err.textContent = msg || '';
    $('login-email').focus();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const btn = $('login-submit');
    const email = $('login-email').value.trim();
    const password = $('login-password').value;
    btn.disabled = true;
    try {
      const j = await call('POST', '/console/login', { email, password }, { auth: true });
      $('login-password').value = '';
      signedIn(data(j));
    } catch (e) {
      $('login-password').value = '';
      let msg = e.message;
      if (e.status === 403 && !(e.body && e.body.error)) msg = 'Only firm administrators may use the console.';
      if (e.status === 401 && !(e.body && e.body.error)) msg = 'Wrong e-mail or password.';
      showLogin(msg);
      say(msg, 'err');
    } finally {
      btn.disabled = false;
    }
  }

  async function onSignout(ev) {
    const btn = ev.currentTarget;
    btn.disabled = true;
    try { await call('POST', '/console/logout'); } catch (e) { if (e.status !== 401) say(`Sign out: ${e.message}`, 'err'); }
    btn.disabled = false;
    signedOut('');
  }

  function signedIn(d) {
    if (!d || !d.user || !d.csrfToken) { showLogin('Unexpected answer from the console.'); return; }
    S.user = d.user;
    S.csrf = d.csrfToken;
    $('login-view').hidden = true;
    $('login-error').hidden = true;
    $('console-view').hidden = false;
    const who = $('who');
    who.textContent = `${userName(d.user)} (${d.user.role || 'admin'})`;
    who.hidden = false;
    $('signout').hidden = false;
    say('', '');
    loadUsers().finally(() => { refreshAudit(); refreshSessions(); });
    refreshWebhooks();
    startPolling();
  }

  function signedOut(msg) {
    stopPolling();
    S.user = null;
    S.csrf = null;
    S.users.clear();
    S.spark.clear();
    S.deadSig = '';
    S.breakersMissing = false;
    // Leave nothing of the previous user's data in the page.
    for (const id of ['queue-rows', 'dead-list', 'health-links', 'health-checks', 'breakers', 'audit-rows',
      'session-rows', 'webhook-subs', 'webhook-failing', 'live-rate', 'live-p99']) $(id).replaceChildren();
    for (const id of ['audit-result', 'dead-count', 'health-overall', 'live-rate-now', 'live-p99-now']) $(id).textContent = '';
    showLogin(msg);
    if (msg) say(msg, 'err');
  }

  // ---------- polling ----------
  function tick() {
    if (!S.user || document.hidden) return;
    once('queues', () => refreshQueues(true));
    once('health', refreshHealth);
    once('live', refreshLive);
  }
  function startPolling() {
    stopPolling();
    tick();
    S.timer = setInterval(tick, POLL_MS);
  }
  function stopPolling() {
    if (S.timer) clearInterval(S.timer);
    S.timer = null;
  }

  async function loadUsers() {
    try {
      const list = data(await call('GET', `${API}/users?limit=100`)) || [];
      S.users.clear();
      for (const u of list) S.users.set(u.id, u);
    } catch (_) { /* names are a nicety: ids are shown instead */ }
  }

  // ---------- queues ----------
  const STATES = ['waiting', 'active', 'delayed', 'failed', 'dead', 'completed'];

  // `fromPoll`: a timed poll, whose completed counts feed the sparklines; an action's refresh
  // does not (it would add a point out of step) but re-reads the dead jobs at once.
  async function refreshQueues(fromPoll) {
    let list;
    try {
      list = data(await call('GET', `${API}/admin/queues`)) || [];
      panelError('queues', null);
    } catch (e) {
      panelError('queues', e);
      return;
    }
    let dead = 0;
    for (const qs of list) {
      const c = qs.counts || {};
      dead += Number(c.dead) || 0;
      const sp = S.spark.get(qs.queue) || { last: null, deltas: [] };
      S.spark.set(qs.queue, sp);
      const done = Number(c.completed) || 0;
      if (sp.last == null) sp.last = done;
      else if (fromPoll === true) {
        // Cleaning completed jobs lowers the count: that is not negative throughput.
        sp.deltas.push(Math.max(0, done - sp.last));
        if (sp.deltas.length > SPARK_POINTS) sp.deltas.shift();
        sp.last = done;
      }
    }
    reconcile($('queue-rows'), list, (x) => x.queue, createQueueRow, updateQueueRow);
    $('dead-count').textContent = String(dead);
    const sig = list.map((x) => `${x.queue}:${(x.counts || {}).dead || 0}`).join(',');
    if (fromPoll !== true || sig !== S.deadSig || Date.now() - S.deadAt > 30000) {
      S.deadSig = sig;
      S.deadAt = Date.now();
      await refreshDead(list.filter((x) => (x.counts || {}).dead > 0).map((x) => x.queue));
    }
  }

  function createQueueRow(qs) {
    const tr = el('tr', { testid: `queue-row-${qs.queue}` });
    const refs = { state: el('span', { class: 'badge', testid: `queue-state-${qs.queue}` }), counts: {} };
    tr.append(el('th', { scope: 'row' }, qs.queue), el('td', null, refs.state));
    for (const st of STATES) {
      refs.counts[st] = el('td', { class: `num c-${st}`, testid: `queue-count-${qs.queue}-${st}` });
      tr.append(refs.counts[st]);
    }
    refs.spark = svg('svg', { class: 'spark', viewBox: '0 0 120 24', width: 120, height: 24, preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    refs.rate = el('span', { class: 'muted small' });
    refs.btn = button('Pause', null, () => toggleQueue(tr), 'small');
    tr.append(el('td', { class: 'sparkcell' }, refs.spark, refs.rate), el('td', null, refs.btn));
    tr._refs = refs;
    return tr;
  }

  function updateQueueRow(tr, qs) {
    const r = tr._refs;
    tr._q = qs;
    r.state.textContent = qs.paused ? 'paused' : 'running';
    r.state.className = 'badge ' + (qs.paused ? 'warn' : 'ok');
    for (const st of STATES) {
      const n = Number((qs.counts || {})[st]) || 0;
      r.counts[st].textContent = String(n);
      r.counts[st].classList.toggle('hot', n > 0 && (st === 'dead' || st === 'failed'));
    }
    r.btn.textContent = qs.paused ? 'Resume' : 'Pause';
    r.btn.setAttribute('data-testid', qs.paused ? `queue-resume-${qs.queue}` : `queue-pause-${qs.queue}`);
    r.rate.textContent = `${qs.completedLastHour ?? 0}/h`;
    drawSpark(r.spark, (S.spark.get(qs.queue) || {}).deltas || []);
  }

  function drawSpark(node, deltas) {
    const W = 120, H = 24;
    const max = Math.max(1, ...deltas);
    const n = Math.max(deltas.length, 2);
    const pts = (deltas.length ? deltas : [0, 0]).map((v, i) =>
      `${((i / (n - 1)) * W).toFixed(1)},${(H - 1 - (v / max) * (H - 2)).toFixed(1)}`);
    if (pts.length === 1) pts.push(`${W},${pts[0].split(',')[1]}`);
    node.replaceChildren(svg('polyline', { class: 'spark-line', points: pts.join(' ') }),
      svg('title', null, `completed per ${POLL_MS / 1000} s, newest right (peak ${max})`));
  }

  async function toggleQueue(tr) {
    const qs = tr._q;
    const verb = qs.paused ? 'resume' : 'pause';
    await act(tr._refs.btn, `${verb === 'pause' ? 'Pause' : 'Resume'} queue ${qs.queue}`,
      () => call('POST', `${API}/admin/queues/${q(qs.queue)}/${verb}`), () => refreshQueues());
  }

  async function refreshDead(queues) {
    const jobs = [];
    const errors = [];
    await Promise.all(queues.map(async (name) => {
      try {
        const list = data(await call('GET', `${API}/admin/queues/${q(name)}/jobs?state=dead&limit=100`)) || [];
        for (const j of list) jobs.push(j);
      } catch (e) { errors.push(`${name}: ${e.message}`); }
    }));
    jobs.sort((a, b) => (b.id > a.id ? 1 : b.id < a.id ? -1 : 0));
    if (errors.length) panelError('queues', new Error(`Dead jobs: ${errors.join('; ')}`));
    $('dead-empty').hidden = jobs.length > 0;
    reconcile($('dead-list'), jobs, (j) => j.id, createDead, updateDead);
  }

  function createDead(j) {
    const li = el('li', { testid: `dead-job-${j.id}`, class: 'row' });
    const refs = {
      head: el('div', { class: 'line' }),
      err: el('div', { class: 'errtext mono' }),
      retry: button('Retry', `dead-retry-${j.id}`, () => act(refs.retry, `Retry job ${j.id}`,
        () => call('POST', `${API}/admin/jobs/${q(j.id)}/retry`), () => refreshQueues()), 'small'),
      del: button('Delete', `dead-delete-${j.id}`, () => act(refs.del, `Delete job ${j.id}`,
        () => call('DELETE', `${API}/admin/jobs/${q(j.id)}`), () => refreshQueues()), 'small danger'),
    };
    li.append(el('div', { class: 'grow' }, refs.head, refs.err), el('div', { class: 'actions' }, refs.retry, refs.del));
    li._refs = refs;
    return li;
  }

  function updateDead(li, j) {
    const r = li._refs;
    r.head.replaceChildren(el('span', { class: 'mono' }, `#${j.id}`), ' ', el('strong', null, j.jobType || '?'),
      ' in ', el('span', { class: 'mono' }, j.queue), ' ',
      el('span', { class: 'muted small' }, `${j.attempts ?? '?'}/${j.maxAttempts ?? '?'} attempts, died ${fmtTime(j.finishedAt)}`));
    const last = j.lastError || (Array.isArray(j.errors) && j.errors.length ? j.errors[j.errors.length - 1].error : '');
    r.err.textContent = clip(last || '(no error recorded)', 400);
    r.err.title = String(last || '');
  }

  // ---------- health ----------
  async function refreshHealth() {
    let h;
    try {
      h = await call('GET', '/console/api/health', undefined, { okStatus: [503] });
      panelError('health', null);
    } catch (e) {
      panelError('health', e);
      return;
    }
    const details = (h && h.details) || {};
    const overall = $('health-overall');
    overall.textContent = h && h.status === 'ok' ? 'ok' : 'error';
    overall.className = 'badge ' + (h && h.status === 'ok' ? 'ok' : 'bad');

    const links = ['database', 'redis', 'clamd'].map((name) => ({ name, v: details[name] || null }));
    reconcile($('health-links'), links, (x) => x.name,
      (x) => el('li', { testid: `health-link-${x.name}`, class: 'row' }), (li, x) => fillCheck(li, x.name, x.v));
    const checks = Object.keys(details).map((name) => ({ name, v: details[name] }));
    reconcile($('health-checks'), checks, (x) => x.name,
      (x) => el('li', { testid: `health-check-${x.name}`, class: 'row' }), (li, x) => fillCheck(li, x.name, x.v));
    await refreshBreakers(details);
  }

  function describeCheck(v) {
    const bits = [];
    if (typeof v.latencyMs === 'number') bits.push(`${fmtNum(v.latencyMs)} ms`);
    if (v.backend) bits.push(String(v.backend));
    if (v.breaker) bits.push(`breaker ${v.breaker}`);
    if (v.residentBytes !== undefined) bits.push(`RSS ${fmtBytes(v.residentBytes)} of ${fmtBytes(v.thresholdBytes)}`);
    if (v.availableBytes !== undefined) bits.push(`${fmtBytes(v.availableBytes)} free of ${fmtBytes(v.totalBytes)}`);
    if (v.version) bits.push(`v${v.version}`);
    if (v.required === false) bits.push('optional');
    if (v.message) bits.push(String(v.message));
    return bits.join(' · ');
  }

  function fillCheck(li, name, v) {
    const status = v ? String(v.status || '?') : 'not configured';
    const cls = !v ? 'muted' : status === 'up' ? 'ok' : 'bad';
    li.replaceChildren(el('span', { class: 'name' }, name), el('span', { class: `badge ${cls}`, testid: `health-status-${name}` }, status),
      el('span', { class: 'muted small grow', testid: `health-latency-${name}` }, v ? describeCheck(v) : ''));
  }

  // Breakers: the assumed /admin/breakers route; until it exists, what /health tells (Redis).
  async function refreshBreakers(details) {
    let list = null;
    if (!S.breakersMissing) {
      try {
        list = data(await call('GET', `${API}/admin/breakers`)) || [];
      } catch (e) {
        if (e.status === 404 || e.status === 405) S.breakersMissing = true;
        else { $('breaker-note').hidden = false; $('breaker-note').textContent = `Breakers: ${e.message}`; }
      }
    }
    if (!list) {
      list = [];
      for (const [name, v] of Object.entries(details)) if (v && v.breaker) list.push({ name, state: v.breaker });
    } else {
      $('breaker-note').hidden = true;
    }
    if (S.breakersMissing) {
      $('breaker-note').hidden = false;
      $('breaker-note').textContent = 'Only the breakers /health reports are shown.';
    }
    const key = (b) => `${b.name || b.dependency}${b.target ? '-' + b.target : ''}`;
    reconcile($('breakers'), list, key, (b) => el('li', { testid: `breaker-${key(b)}`, class: 'row' }), (li, b) => {
      const st = String(b.state || '?').toLowerCase().replace(/[_ ]/g, '-').replace('halfopen', 'half-open');
      li.replaceChildren(el('span', { class: 'name' }, b.name || b.dependency || '?'),
        el('span', { class: 'badge ' + (st === 'closed' ? 'ok' : st === 'open' ? 'bad' : 'warn') }, st),
        el('span', { class: 'muted small grow' }, b.target ? String(b.target) : ''));
    });
  }

  // ---------- audit ----------
  async function refreshAudit() {
    try {
      const list = data(await call('GET', `${API}/audit?limit=20`)) || [];
      panelError('audit', null);
      $('audit-rows').replaceChildren(...list.map((e) => el('tr', { testid: `audit-row-${e.id}` },
        el('td', { class: 'nowrap' }, fmtTime(e.occurredAt)),
        el('td', null, actorLabel(e)),
        el('td', { class: 'mono' }, e.action),
        el('td', null, el('span', null, e.entityType), e.entityId ? el('span', { class: 'muted mono' }, ` ${clip(e.entityId, 40)}`) : null))));
      if (!list.length) $('audit-rows').append(el('tr', null, el('td', { colspan: 4, class: 'muted' }, 'No entries.')));
    } catch (e) {
      panelError('audit', e);
    }
  }

  function actorLabel(e) {
    const u = e.actorId && S.users.get(e.actorId);
    if (u) return `${userName(u)}${e.actorRole ? ` (${e.actorRole})` : ''}`;
    const id = e.actorId ? ` ${shortId(e.actorId)}` : '';
    return `${e.actorType || '?'}${e.actorRole ? ` (${e.actorRole})` : ''}${id}`;
  }

  async function verifyAudit(btn) {
    const out = $('audit-result');
    out.textContent = 'Verifying…';
    out.className = 'result';
    await act(btn, 'Verify audit chain', async () => {
      try {
        const v = data(await call('GET', `${API}/audit/verify`));
        if (v.valid) {
          out.textContent = `valid — ${v.entriesChecked} entries checked`;
          out.className = 'result ok';
        } else {
          out.textContent = `INVALID — first break in chain ${v.firstInvalidChain ?? '?'} at sequence ${v.firstInvalidSequence ?? '?'} (${v.entriesChecked} entries checked)`;
          out.className = 'result bad';
        }
      } catch (e) {
        out.textContent = '';
        throw e;
      }
    });
  }

  async function downloadCsv(btn) {
    await act(btn, 'Audit CSV report', async () => {
      const to = new Date();
      const from = new Date(to.getTime() - 30 * 24 * 3600 * 1000);
      const url = `${API}/audit/report?from=${q(from.toISOString())}&to=${q(to.toISOString())}&format=csv`;
      const res = await call('GET', url, undefined, { raw: true });
      const blob = await res.blob();
      const href = URL.createObjectURL(blob);
      const a = el('a', { href, download: `audit-report-${to.toISOString().slice(0, 10)}.csv`, class: 'sr' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    });
  }

  // ---------- sessions (assumed: GET/DELETE /sessions, the firm's, admins only) ----------
  async function refreshSessions() {
    const body = $('session-rows');
    let list;
    try {
      list = data(await call('GET', `${API}/sessions`)) || [];
      panelError('sessions', null);
    } catch (e) {
      panelError('sessions', e);
      return;
    }
    const groups = new Map();
    for (const s of list) {
      const u = s.user || S.users.get(s.userId) || { id: s.userId, email: s.email, firstName: s.firstName, lastName: s.lastName, role: s.role };
      const k = u.id || s.userId || '?';
      if (!groups.has(k)) groups.set(k, { u, sessions: [] });
      groups.get(k).sessions.push(s);
    }
    const rows = [];
    const ordered = Array.from(groups.values()).sort((a, b) => userName(a.u).localeCompare(userName(b.u)));
    for (const g of ordered) {
      g.sessions.sort((a, b) => String(b.lastSeenAt).localeCompare(String(a.lastSeenAt)));
      rows.push(el('tr', { class: 'group', testid: `session-user-${g.u.id || 'unknown'}` },
        el('th', { colspan: 4, scope: 'rowgroup' }, userName(g.u), ' ',
          el('span', { class: 'muted small' }, `${g.u.email || ''}${g.u.role ? ` · ${g.u.role}` : ''} · ${g.sessions.length} session${g.sessions.length === 1 ? '' : 's'}`))));
      for (const s of g.sessions) {
        const revoke = button('Revoke', `session-revoke-${s.id}`, () => act(revoke, `Revoke session ${shortId(s.id)}`,
          () => call('DELETE', `${API}/sessions/${q(s.id)}`), refreshSessions), 'small danger');
        rows.push(el('tr', { testid: `session-row-${s.id}` },
          el('td', { class: 'nowrap' }, fmtTime(s.createdAt), s.current ? el('span', { class: 'badge ok' }, 'this console') : null),
          el('td', { class: 'nowrap' }, fmtTime(s.lastSeenAt)),
          el('td', { title: String(s.userAgent || '') }, el('span', { class: 'mono' }, s.ip || '—'), ' ',
            el('span', { class: 'muted small' }, clip(s.userAgent || '', 48))),
          el('td', null, revoke)));
      }
    }
    if (!rows.length) rows.push(el('tr', null, el('td', { colspan: 4, class: 'muted' }, 'No active sessions.')));
    body.replaceChildren(...rows);
  }

  // ---------- webhooks ----------
  const FAILING = new Set(['failed', 'retrying']);

  async function refreshWebhooks() {
    let subs;
    try {
      subs = data(await call('GET', `${API}/webhooks`)) || [];
      panelError('webhooks', null);
    } catch (e) {
      panelError('webhooks', e);
      return;
    }
    const failing = [];
    const errors = [];
    await Promise.all(subs.map(async (sub) => {
      try {
        const ds = data(await call('GET', `${API}/webhooks/${q(sub.id)}/deliveries`)) || [];
        for (const d of ds) if (FAILING.has(d.status)) failing.push({ sub, d });
      } catch (e) { errors.push(e.message); }
    }));
    if (errors.length) panelError('webhooks', new Error(`Deliveries: ${errors[0]}`));
    $('webhook-subs-empty').hidden = subs.length > 0;
    $('webhook-subs').replaceChildren(...subs.map((s) => {
      const li = el('li', { class: 'row' + (s.active ? '' : ' disabled'), testid: `webhook-sub-${s.id}` });
      const info = el('div', { class: 'grow' },
        el('div', { class: 'line' }, el('span', { class: 'mono' }, clip(s.url, 80)), ' ',
          s.active ? el('span', { class: 'badge ok' }, 'active') : el('span', { class: 'badge bad', testid: `webhook-disabled-${s.id}` }, 'disabled')),
        el('div', { class: 'muted small' }, `${(s.events || []).join(', ')} · ${s.consecutiveFailures || 0} consecutive failures`,
          s.disabledReason ? ` · ${s.disabledReason}` : ''));
      li.append(info);
      if (!s.active) {
        const en = button('Re-enable', `webhook-enable-${s.id}`, () => act(en, 'Re-enable webhook',
          () => call('PATCH', `${API}/webhooks/${q(s.id)}`, { active: true }), refreshWebhooks), 'small');
        li.append(el('div', { class: 'actions' }, en));
      }
      return li;
    }));
    failing.sort((a, b) => String(b.d.createdAt).localeCompare(String(a.d.createdAt)));
    $('webhook-failing-empty').hidden = failing.length > 0;
    $('webhook-failing').replaceChildren(...failing.map(({ sub, d }) => {
      const re = button('Redeliver', `webhook-redeliver-${d.id}`, () => act(re, `Redeliver ${d.eventType}`,
        () => call('POST', `${API}/webhooks/${q(sub.id)}/deliveries/${q(d.id)}/redeliver`), refreshWebhooks), 'small');
      const why = d.lastStatusCode ? `HTTP ${d.lastStatusCode}` : '';
      return el('li', { class: 'row', testid: `webhook-delivery-${d.id}` },
        el('div', { class: 'grow' },
          el('div', { class: 'line' }, el('strong', null, d.eventType), ' ', el('span', { class: 'badge bad' }, d.status), ' ',
            el('span', { class: 'muted small' }, `${d.attempts} attempts · ${fmtTime(d.createdAt)} · ${clip(sub.url, 48)}`)),
          el('div', { class: 'errtext mono' }, clip([why, d.lastError].filter(Boolean).join(' — ') || '(no error recorded)', 300))),
        el('div', { class: 'actions' }, re));
    }));
  }

  // ---------- live ----------
  async function refreshLive() {
    let d;
    try {
      d = data(await call('GET', '/console/live')) || {};
      panelError('live', null);
    } catch (e) {
      panelError('live', e);
      return;
    }
    const pts = (Array.isArray(d.points) ? d.points : [])
      .map((p) => ({ t: Date.parse(p.at), rate: p.ratePerSecond, p99: p.p99Ms }))
      .filter((p) => Number.isFinite(p.t))
      .sort((a, b) => a.t - b.t);
    const end = pts.length ? pts[pts.length - 1].t : Date.now();
    plot($('live-rate'), pts, 'rate', end, '/s');
    plot($('live-p99'), pts, 'p99', end, ' ms');
    const last = pts[pts.length - 1];
    $('live-rate-now').textContent = last && Number.isFinite(last.rate) ? `${fmtNum(last.rate, 2)}/s now` : '';
    $('live-p99-now').textContent = last && Number.isFinite(last.p99) ? `${fmtNum(last.p99)} ms now` : '';
  }

  // A line plot over the hour ending at `end`; missing values break the line.
  function plot(node, pts, field, end, unit) {
    const W = 600, H = 160, L = 44, R = 8, T = 8, B = 18;
    const start = end - 3600 * 1000;
    const vals = pts.map((p) => p[field]).filter((v) => typeof v === 'number' && Number.isFinite(v));
    const max = niceMax(Math.max(0, ...vals));
    const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const kids = [];
    for (const f of [0, 0.5, 1]) {
      const yy = y(max * f).toFixed(1);
      kids.push(svg('line', { class: 'grid-line', x1: L, x2: W - R, y1: yy, y2: yy }),
        svg('text', { class: 'axis', x: L - 4, y: (Number(yy) + 4).toFixed(1), 'text-anchor': 'end' }, fmtNum(max * f, max < 10 ? 1 : 0)));
    }
    for (const [t, label] of [[start, '−60 min'], [start + 1800e3, '−30 min'], [end, 'now']]) {
      kids.push(svg('text', { class: 'axis', x: x(t).toFixed(1), y: H - 4, 'text-anchor': t === start ? 'start' : t === end ? 'end' : 'middle' }, label));
    }
    let d = '';
    let pen = false;
    for (const p of pts) {
      const v = p[field];
      if (p.t < start || typeof v !== 'number' || !Number.isFinite(v)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)} ${y(v).toFixed(1)} `;
      pen = true;
    }
    if (d) kids.push(svg('path', { class: 'plot-line', d: d.trim() }));
    else kids.push(svg('text', { class: 'axis', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
    kids.push(svg('title', null, `${vals.length} points, peak ${fmtNum(Math.max(0, ...vals), 2)}${unit}`));
    node.setAttribute('data-points', String(vals.length));
    node.replaceChildren(...kids);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

/* The store dashboard: fetches /api/v1/kpis (the admin cookie authenticates it) every ~10 s and draws
 * the status cards and the charts (charts.js). Text only through textContent. */
(function () {
  'use strict';

  var boot = JSON.parse(document.getElementById('boot').textContent);
  var C = window.InstoreCharts;
  var zoneNames = boot.zones || {};
  var refreshMs = (boot.refresh_s || 10) * 1000;
  var timer = null;
  var loads = 0;
  var picked = '';  // the day the user chose; '' follows today (in the store's time zone)
  var last = null;  // the last figures, redrawn when the window is resized

  function $(id) { return document.getElementById(id); }

  function setText(id, value) {
    var node = $(id);
    if (node) { node.textContent = value; }
  }

  function setState(id, ok, label) {
    var node = $(id);
    if (!node) { return; }
    node.classList.remove('ok', 'bad', 'warn');
    node.classList.add(ok === true ? 'ok' : (ok === false ? 'bad' : 'warn'));
    node.setAttribute('data-ok', ok === true ? 'true' : (ok === false ? 'false' : 'unknown'));
    if (label !== undefined) { node.textContent = label; }
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) { return '—'; }
    if (seconds < 90) { return Math.round(seconds) + ' s'; }
    if (seconds < 5400) { return Math.round(seconds / 60) + ' min'; }
    if (seconds < 172800) { return (Math.round(seconds / 360) / 10) + ' h'; }
    return (Math.round(seconds / 8640) / 10) + ' days';
  }

  function since(epoch, now) {
    return epoch ? ago(Math.max(0, now - epoch)) + ' ago' : 'never';
  }

  function zoneLabel(id) { return zoneNames[id] || id; }

  function plural(n, one, many) {
    return n.toLocaleString('en') + ' ' + (n === 1 ? one : (many || one + 's'));
  }

  function query() {
    var day = picked;
    if (!day) { return ''; }
    var d = new Date(day + 'T00:00:00Z');
    d.setUTCDate(d.getUTCDate() + 1);
    return '?from=' + encodeURIComponent(day) + '&to=' + encodeURIComponent(d.toISOString().slice(0, 10));
  }

  function renderLive(live) {
    if (!live) { return; }
    var checks = live.checks || {};
    setState('ready', live.ready, live.ready ? 'Ready' : 'Not ready');
    var broker = checks.broker || {};
    setState('st-broker', broker.ok, broker.ok ? 'Connected' : 'Disconnected');
    setText('st-broker-detail', broker.detail || '');
    var sync = live.sync || {};
    var now = live.now;
    if (!sync.enabled) {
      setState('st-sync', null, 'Not configured');
      setText('st-sync-detail', 'no [central] url: events stay on this device');
    } else {
      var ok = checks.sync ? checks.sync.ok : null;
      setState('st-sync', ok, sync.last_error ? 'Offline' : (ok ? 'In sync' : 'Lagging'));
      setText('st-sync-detail', (sync.last_error ? sync.last_error + ' · ' : '') + 'last push ' +
              since(sync.last_push_success, now) + ' · breaker ' + (sync.breaker || '—'));
    }
    var pending = sync.outbox_pending || 0;
    setState('st-outbox', pending === 0 ? true : (checks.sync && checks.sync.ok === false ? false : null),
             pending.toLocaleString('en') + ' pending');
    setText('st-outbox-detail', pending ? 'oldest ' + ago(sync.outbox_oldest_age_s) + ' old' : 'nothing waiting');
    var cache = live.cache || {};
    setState('st-cache', true, plural(cache.profiles || 0, 'profile'));
    setText('st-cache-detail', 'of at most ' + (cache.max || 0).toLocaleString('en'));
    var ingest = checks.ingest || {};
    setState('st-ingest', ingest.ok, ingest.ok ? 'Keeping up' : 'Behind');
    setText('st-ingest-detail', 'lag ' + (ingest.lag_s === undefined ? '—' : ingest.lag_s + ' s'));
    (live.screens || []).forEach(function (s) {
      var node = document.querySelector('code[data-screen="' + CSS.escape(s.id) + '"]');
      if (node) {
        node.textContent = s.content_id;
        node.setAttribute('data-content-id', s.content_id);
      }
    });
  }

  function renderDeadletters(dl) {
    var list = $('st-deadletters-reasons');
    while (list.firstChild) { list.removeChild(list.firstChild); }
    setState('st-deadletters', dl.total === 0 ? true : null, dl.total.toLocaleString('en') + ' refused');
    $('st-deadletters').setAttribute('data-value', String(dl.total));
    dl.by_reason.slice(0, 6).forEach(function (r) {
      var li = document.createElement('li');
      li.setAttribute('data-reason', r.reason);
      li.setAttribute('data-value', String(r.count));
      var name = document.createElement('span');
      name.textContent = r.reason;
      var n = document.createElement('b');
      n.textContent = r.count.toLocaleString('en');
      li.appendChild(name);
      li.appendChild(n);
      list.appendChild(li);
    });
    if (!dl.by_reason.length) {
      var li = document.createElement('li');
      li.textContent = 'none in this period';
      list.appendChild(li);
    }
  }

  function render(k) {
    last = k;
    var eng = k.engagement;
    setText('kpi-visitors', k.visitors.total.toLocaleString('en'));
    setText('kpi-visitors-k', k.visitors.total === 1 ? 'visitor' : 'visitors');
    setText('kpi-sessions', eng.kiosk_sessions.toLocaleString('en'));
    setText('kpi-sessions-k', eng.kiosk_sessions === 1 ? 'kiosk session' : 'kiosk sessions');
    setText('kpi-purchases', eng.purchases.toLocaleString('en'));
    setText('kpi-purchases-k', eng.purchases === 1 ? 'purchase' : 'purchases');
    setText('kpi-revenue', eng.revenue.toLocaleString('en', {minimumFractionDigits: 2, maximumFractionDigits: 2}));
    $('kpi-visitors').setAttribute('data-value', String(k.visitors.total));
    $('kpi-purchases').setAttribute('data-value', String(eng.purchases));
    $('kpi-revenue').setAttribute('data-value', String(eng.revenue));
    var day = k.range.from_local.slice(0, 10);
    if ($('day').value !== day && document.activeElement !== $('day')) { $('day').value = day; }
    $('day').setAttribute('data-day', day);
    setText('range', k.range.from_local.slice(0, 16).replace('T', ' ') + ' → ' +
            k.range.to_local.slice(0, 16).replace('T', ' ') + ' (' + k.range.timezone + ')');

    var byZone = {};
    Object.keys(zoneNames).forEach(function (z) { byZone[z] = {zone: z, visitors: 0, dwell_avg_s: null, stays: 0}; });
    k.zones.forEach(function (z) { byZone[z.zone] = z; });
    var zoneList = Object.keys(byZone).map(function (z) { return byZone[z]; });
    C.bars($('chart-zone-visitors'), zoneList.map(function (z) {
      return {key: z.zone, label: zoneLabel(z.zone), value: z.visitors};
    }), {title: 'Visitors by zone', columns: ['Zone', 'Visitors'], integer: true, emptyText: 'No zones configured'});
    C.bars($('chart-zone-dwell'), zoneList.map(function (z) {
      return {key: z.zone, label: zoneLabel(z.zone), value: z.dwell_avg_s,
              note: z.stays ? plural(z.stays, 'stay') : 'no stays yet'};
    }), {title: 'Average stay by zone', columns: ['Zone', 'Average stay', 'Completed stays'],
         format: function (v) { return ago(v); }});
    var per = k.range.bucket_s >= 86400 ? 'day' : 'hour';
    C.line($('chart-timeline'), k.timeline.map(function (b) {
      return {key: String(b.start), label: b.label, value: b.visitors};
    }), {integer: true, title: 'Visitors over the day (visits started per ' + per + ')',
         columns: [per === 'day' ? 'Day' : 'Hour', 'Visits started']});
    C.funnel($('chart-funnel'), k.funnel.map(function (s) {
      return {key: s.step, label: s.label, value: s.value};
    }), {title: 'Touchpoint engagement funnel'});
    C.bars($('chart-content'), k.content.slice(0, 10).map(function (c) {
      var rules = c.rules || (c.rule_id ? [c.rule_id] : []);
      return {key: c.content_id, label: c.content_id, value: c.shown,
              note: plural(c.reached, 'shopper') + ' reached · ' + plural(c.screens, 'display') +
                    (rules.length ? ' · ' + (rules.length === 1 ? 'rule ' : 'rules ') + rules.join(', ') : ''),
              attrs: {reached: c.reached, screens: c.screens, rule: c.rule_id || ''}};
    }), {title: 'Content shown (times) and its reach', columns: ['Content', 'Times shown', 'Reach'], integer: true,
         emptyText: 'No rule content shown in this period'});
    var sync = k.sync;
    C.meter($('chart-sync'), {key: 'oldest_pending_age_s', label: 'Oldest event waiting',
                              value: sync.oldest_pending_age_s || 0, max: 3600, warn: 300, bad: 3600,
                              maxLabel: '1 h'},
            {title: 'Sync lag: the oldest event not yet at the central store', format: function (v) { return ago(v); }});
    setText('sync-pending', sync.outbox_pending.toLocaleString('en'));
    setText('sync-pending-k', sync.outbox_pending === 1 ? 'event' : 'events');
    $('sync-pending').setAttribute('data-value', String(sync.outbox_pending));
    setText('sync-capacity', sync.outbox_capacity ? (100 * sync.outbox_used_ratio).toFixed(2) + '%' : '—');
    renderDeadletters(k.deadletters);
    renderLive(k.live);
  }

  function refresh() {
    clearTimeout(timer);
    fetch('/api/v1/kpis' + query(), {credentials: 'same-origin', cache: 'no-store',
                                     headers: {Accept: 'application/json'}})
      .then(function (r) {
        if (r.status === 401 || r.status === 403) { location.reload(); throw new Error('signed out'); }
        return r.json().then(function (body) {
          if (!r.ok) { throw new Error(body && body.error ? body.error.message : 'HTTP ' + r.status); }
          return body;
        });
      })
      .then(function (k) {
        render(k);
        loads += 1;
        document.body.setAttribute('data-loaded', String(loads));
        $('offline').hidden = true;
        setText('updated', new Date().toLocaleTimeString('en-GB'));
      })
      .catch(function (err) {
        $('offline').hidden = false;
        setText('offline-detail', String(err && err.message ? err.message : err));
      })
      .then(function () { timer = setTimeout(refresh, refreshMs); });
  }

  $('day').addEventListener('change', function () { picked = $('day').value; refresh(); });
  $('today').addEventListener('click', function () { picked = ''; refresh(); });
  var resizing = null;
  window.addEventListener('resize', function () {  // labels are fitted to the width: fit them again
    clearTimeout(resizing);
    resizing = setTimeout(function () { if (last) { render(last); } }, 150);
  });
  document.addEventListener('visibilitychange', function () { if (!document.hidden) { refresh(); } });
  refresh();
}());

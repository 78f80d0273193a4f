/* The staff app on an associate's phone: the live feed (SSE, resumes after Wi-Fi drops with Last-Event-ID),
 * claiming items, pickup handover and returns with the camera (BarcodeDetector where the browser has it, else
 * the vendored ZXing decoder), and the POS basket with a queue of sales kept in localStorage until the edge
 * has them (each with an id made here, so a sale sent twice is recorded once). */
(function () {
  'use strict';

  var boot = JSON.parse(document.getElementById('boot').textContent);
  var S = boot.strings;
  var QUEUE_KEY = 'instore-staff-queue';
  var BASKET_KEY = 'instore-staff-basket';

  function t(key, vars) {
    var text = S[key] === undefined ? key : String(S[key]);
    return text.replace(/%\((\w+)\)[sd]/g, function (whole, name) {
      return vars && Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole;
    });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function newId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function api(method, path, body) {
    return fetch(path, {
      method: method, credentials: 'same-origin',
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        return { ok: resp.ok, status: resp.status, data: data };
      });
    });
  }

  function errorText(r) {
    return (r.data && r.data.error && r.data.error.message) || ('HTTP ' + r.status);
  }

  function show(node, text, bad) {
    node.textContent = text;
    node.hidden = false;
    node.classList.toggle('bad', !!bad);
  }

  function money(value) {
    try {
      return new Intl.NumberFormat(boot.lang, { style: 'currency', currency: boot.currency }).format(value);
    } catch (e) {
      return value.toFixed(2);
    }
  }

  /* --- tabs ------------------------------------------------------------------------------------------- */
  var tabs = document.querySelectorAll('[data-tab]');
  function openTab(name) {
    Array.prototype.forEach.call(tabs, function (b) {
      b.setAttribute('aria-pressed', b.getAttribute('data-tab') === name ? 'true' : 'false');
    });
    Array.prototype.forEach.call(document.querySelectorAll('[data-view]'), function (s) {
      s.hidden = s.getAttribute('data-view') !== name;
    });
    stopScan();
  }
  Array.prototype.forEach.call(tabs, function (b) {
    b.addEventListener('click', function () { openTab(b.getAttribute('data-tab')); });
  });

  /* --- the feed --------------------------------------------------------------------------------------- */
  var feedList = document.getElementById('feed');
  var feedEmpty = document.getElementById('feed-empty');
  var live = document.getElementById('live');
  var items = {};
  var lastRev = null;

  function describe(item) {
    var d = item.data || {};
    var parts = [];
    if (d.name) { parts.push(d.name); }
    if (d.order_id) { parts.push(t('order', { order: d.order_id })); }
    if (d.bay) { parts.push(t('bay', { bay: d.bay })); }
    if (item.kind === 'assist-request' && d.source) { parts.push(t('at_source', { source: d.source })); }
    if (d.zone_name) { parts.push(t('in_zone', { zone: d.zone_name })); }
    return parts.join(' · ');
  }

  function render(item) {
    var li = items[item.id] && items[item.id].node;
    if (!li) {
      li = el('li', { 'data-feed-item': String(item.id) });
      feedList.insertBefore(li, feedList.firstChild);
    }
    items[item.id] = { item: item, node: li };
    li.setAttribute('data-kind', item.kind);
    li.setAttribute('data-customer', item.customer || '');
    li.setAttribute('data-claimed-by', item.claimed_by || '');
    li.classList.toggle('done', !!item.done);
    li.textContent = '';
    li.appendChild(el('strong', { 'class': 'kind' }, t('kind_' + item.kind)));
    li.appendChild(el('span', { 'class': 'what' }, describe(item)));
    var d = item.data || {};
    if (d.items && d.items.length) { li.appendChild(el('span', { 'class': 'items' }, d.items.join(', '))); }
    var actions = el('div', { 'class': 'actions' });
    if (item.claimed_by) {
      actions.appendChild(el('span', { 'class': 'claimed', 'data-claimed': '' },
        item.claimed_by === boot.staff_id ? t('claimed_by_you') : t('claimed_by', { name: item.claimed_by })));
    } else if (!item.done) {
      var claim = el('button', { type: 'button', 'data-action': 'claim' }, t('claim'));
      claim.addEventListener('click', function () {
        claim.disabled = true;
        api('POST', '/staff/api/feed/' + item.id + '/claim').then(function (r) {
          if (!r.ok) { claim.disabled = false; alertIn(li, errorText(r)); }
        });
      });
      actions.appendChild(claim);
    }
    if (!item.done && item.claimed_by === boot.staff_id) {
      var done = el('button', { type: 'button', 'data-action': 'done' }, t('done'));
      done.addEventListener('click', function () { api('POST', '/staff/api/feed/' + item.id + '/done'); });
      actions.appendChild(done);
    }
    if (item.customer) {
      actions.appendChild(el('a', { href: '/staff/customer/' + encodeURIComponent(item.customer), 'class': 'story' },
        t('open_story')));
    }
    li.appendChild(actions);
    feedEmpty.hidden = feedList.children.length > 0;
  }

  function alertIn(node, text) {
    var p = node.querySelector('.notice') || node.appendChild(el('p', { 'class': 'notice bad', role: 'alert' }));
    p.textContent = text;
  }

  var source = null;
  function connect() {
    var url = '/staff/feed/stream' + (lastRev !== null ? '?since=' + lastRev : '');
    source = new EventSource(url);
    source.addEventListener('open', function () {
      live.setAttribute('data-state', 'live');
      live.textContent = t('feed_live');
    });
    source.addEventListener('item', function (ev) {
      var item = JSON.parse(ev.data);
      lastRev = lastRev === null ? item.rev : Math.max(lastRev, item.rev);
      render(item);
    });
    source.addEventListener('error', function () {
      live.setAttribute('data-state', 'reconnecting');
      live.textContent = t('feed_reconnecting');
      if (source.readyState === EventSource.CLOSED) {  // refused: the session ended, or the edge is restarting
        setTimeout(function () {
          api('GET', '/staff/api/session').then(function (r) {
            if (r.status === 401) { window.location.reload(); } else { connect(); }
          }, connect);
        }, 2000);
      }
    });
  }
  connect();

  /* --- the camera ------------------------------------------------------------------------------------- */
  var scanning = null;

  function stopScan() {
    if (!scanning) { return; }
    scanning.stopped = true;
    if (scanning.stream) { scanning.stream.getTracks().forEach(function (tr) { tr.stop(); }); }
    scanning.video.hidden = true;
    scanning.button.textContent = t('scan');
    scanning = null;
  }

  function zxingReader(formats) {
    if (!window.ZXing) { return null; }
    var reader = new ZXing.MultiFormatReader();
    var hints = new Map();
    hints.set(ZXing.DecodeHintType.POSSIBLE_FORMATS, formats.map(function (f) {
      return f === 'qr_code' ? ZXing.BarcodeFormat.QR_CODE : ZXing.BarcodeFormat.EAN_13;
    }));
    hints.set(ZXing.DecodeHintType.TRY_HARDER, true);
    reader.setHints(hints);
    return reader;
  }

  var SCAN_VARIANTS = [[1, 0], [0.75, 0], [0.5, 0], [1, 1], [0.9, 0], [0.6, 0], [0.5, 1], [0.8, 1]];

  function decodeFrame(state, canvas, done) {
    var video = state.video;
    if (state.detector) {
      state.detector.detect(video).then(function (codes) {
        done(codes.length ? codes[0].rawValue : null);
      }, function () { done(null); });
      return;
    }
    if (!video.videoWidth || !video.videoHeight || !state.reader) { done(null); return; }
    // Each frame at the next of a few sizes, sharp or slightly softened: ZXing's detector misses some codes at
    // one size and reads them at another (a sharp code filling a 640x480 frame was missed at full size and
    // read at 0.75, or softened by a pixel, every time). Within about a second every variant has been tried.
    var variant = SCAN_VARIANTS[(state.tries = ((state.tries || 0) + 1)) % SCAN_VARIANTS.length];
    var w = Math.round(video.videoWidth * variant[0]), h = Math.round(video.videoHeight * variant[0]);
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.filter = variant[1] ? 'blur(' + variant[1] + 'px)' : 'none';
    ctx.drawImage(video, 0, 0, w, h);
    var rgba = ctx.getImageData(0, 0, w, h).data;
    var lum = new Uint8ClampedArray(w * h);
    for (var i = 0, j = 0; i < lum.length; i++, j += 4) {
      lum[i] = (rgba[j] * 299 + rgba[j + 1] * 587 + rgba[j + 2] * 114) / 1000;
    }
    try {
      var bitmap = new ZXing.BinaryBitmap(new ZXing.HybridBinarizer(new ZXing.RGBLuminanceSource(lum, w, h)));
      done(state.reader.decode(bitmap).getText());
    } catch (e) {
      done(null);
    }
  }

  function startScan(button, formats, onCode) {
    var box = button.parentNode;
    var message = box.querySelector('.camera-message');
    message.hidden = true;
    if (scanning) { var same = scanning.button === button; stopScan(); if (same) { return; } }
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      show(message, t('camera_insecure'), true);
      return;
    }
    var state = { button: button, video: box.querySelector('video'), stopped: false, stream: null };
    scanning = state;
    if ('BarcodeDetector' in window) {
      try { state.detector = new window.BarcodeDetector({ formats: formats }); } catch (e) { state.detector = null; }
    }
    state.reader = zxingReader(formats);
    navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false }).then(function (stream) {
      if (state.stopped) { stream.getTracks().forEach(function (tr) { tr.stop(); }); return; }
      state.stream = stream;
      state.video.srcObject = stream;
      state.video.hidden = false;
      button.textContent = t('stop_scan');
      return state.video.play().then(function () {
        var canvas = document.createElement('canvas');
        (function tick() {
          if (state.stopped) { return; }
          decodeFrame(state, canvas, function (text) {
            if (state.stopped) { return; }
            if (text) { stopScan(); onCode(text); } else { setTimeout(tick, 120); }
          });
        })();
      });
    }).catch(function (err) {
      if (scanning === state) { stopScan(); }
      show(message, t('camera_unavailable', { reason: (err && err.name) || 'error' }), true);
    });
  }

  function scanner(target, formats, onCode) {
    var button = document.querySelector('[data-action="scan"][data-target="' + target + '"]');
    button.addEventListener('click', function () { startScan(button, formats, onCode); });
  }

  /* --- pickup ----------------------------------------------------------------------------------------- */
  var pickupResult = document.getElementById('pickup-result');
  function pickup(code) {
    var status = pickupResult.querySelector('[data-pickup-status]');
    api('POST', '/staff/api/pickup', { code: code }).then(function (r) {
      pickupResult.hidden = false;
      var list = pickupResult.querySelector('.items');
      list.textContent = '';
      if (!r.ok) {
        status.setAttribute('data-pickup-status', 'refused');
        status.textContent = 'refused';
        pickupResult.querySelector('.message').textContent = errorText(r);
        return;
      }
      status.setAttribute('data-pickup-status', r.data.status);
      status.textContent = r.data.status;
      pickupResult.setAttribute('data-state', r.data.status);
      var parts = [r.data.message];
      if (r.data.order_id) { parts.push(t('order', { order: r.data.order_id })); }
      if (r.data.bay) { parts.push(t('bay', { bay: r.data.bay })); }
      pickupResult.querySelector('.message').textContent = parts.join(' · ');
      (r.data.items || []).forEach(function (name) { list.appendChild(el('li', {}, name)); });
    });
  }
  scanner('pickup', ['qr_code'], pickup);
  document.getElementById('pickup-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var input = document.getElementById('pickup-code');
    if (input.value.trim()) { pickup(input.value.trim()); }
  });

  /* --- returns ---------------------------------------------------------------------------------------- */
  var returnLines = [];
  var returnList = document.getElementById('return-items');
  function drawReturn() {
    returnList.textContent = '';
    returnLines.forEach(function (line, n) {
      var li = el('li', {}, line.sku + ' × ' + line.qty + ' ');
      var rm = el('button', { type: 'button', 'class': 'link' }, t('remove'));
      rm.addEventListener('click', function () { returnLines.splice(n, 1); drawReturn(); });
      li.appendChild(rm);
      returnList.appendChild(li);
    });
  }
  document.getElementById('return-add').addEventListener('click', function () {
    var sku = document.getElementById('return-sku').value.trim();
    var qty = parseInt(document.getElementById('return-qty').value, 10) || 1;
    if (sku) { returnLines.push({ sku: sku, qty: qty }); document.getElementById('return-sku').value = ''; drawReturn(); }
  });
  scanner('return', ['qr_code'], function (code) { document.getElementById('return-code').value = code; });
  document.getElementById('return-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var out = document.getElementById('return-result');
    var body = { client_id: newId(), order_id: document.getElementById('return-order').value.trim(),
                 items: returnLines, reason: document.getElementById('return-reason').value.trim() || undefined,
                 code: document.getElementById('return-code').value.trim() || undefined };
    api('POST', '/staff/api/returns', body).then(function (r) {
      if (!r.ok) { show(out, t('error', { message: errorText(r) }), true); return; }
      show(out, t('return_recorded', { order: r.data.order_id }));
      returnLines = []; drawReturn();
    });
  });

  /* --- the POS ---------------------------------------------------------------------------------------- */
  var basket = JSON.parse(localStorage.getItem(BASKET_KEY) || '{"lines":[],"customer":null}');
  var basketList = document.getElementById('basket');
  var sellResult = document.getElementById('sell-result');

  function saveBasket() { localStorage.setItem(BASKET_KEY, JSON.stringify(basket)); }

  function drawBasket() {
    basketList.textContent = '';
    var total = 0;
    basket.lines.forEach(function (line, n) {
      total += (line.price || 0) * line.qty;
      var li = el('li', { 'data-sku': line.sku }, line.name + ' × ' + line.qty + (line.price !== null ? ' · ' + money(line.price * line.qty) : '') + ' ');
      var rm = el('button', { type: 'button', 'class': 'link' }, t('remove'));
      rm.addEventListener('click', function () { basket.lines.splice(n, 1); saveBasket(); drawBasket(); });
      li.appendChild(rm);
      basketList.appendChild(li);
    });
    document.getElementById('basket-empty').hidden = basket.lines.length > 0;
    document.getElementById('basket-total').textContent = money(total);
    var attached = document.getElementById('attached');
    if (basket.customer) { show(attached, t('attached', { name: basket.customer.first_name || basket.customer.customer })); }
    else { attached.hidden = true; }
  }

  function addProduct(p) {
    var line = basket.lines.filter(function (l) { return l.sku === p.sku; })[0];
    if (line) { line.qty += 1; } else { basket.lines.push({ sku: p.sku, name: p.name, price: p.price, qty: 1 }); }
    saveBasket();
    drawBasket();
  }

  scanner('ean', ['ean_13', 'qr_code'], function (code) {
    api('GET', '/staff/api/products?ean=' + encodeURIComponent(code)).then(function (r) {
      if (r.ok && r.data.products.length) { addProduct(r.data.products[0]); sellResult.hidden = true; }
      else { show(sellResult, errorText(r), true); }
    });
  });

  document.getElementById('search-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var q = document.getElementById('search-q').value;
    var results = document.getElementById('search-results');
    api('GET', '/staff/api/products?q=' + encodeURIComponent(q)).then(function (r) {
      results.textContent = '';
      ((r.ok && r.data.products) || []).forEach(function (p) {
        var li = el('li');
        var b = el('button', { type: 'button', 'data-add-sku': p.sku },
          p.name + (p.price !== null ? ' · ' + money(p.price) : ''));
        b.addEventListener('click', function () { addProduct(p); });
        li.appendChild(b);
        results.appendChild(li);
      });
      if (!results.children.length) { results.appendChild(el('li', { 'class': 'empty' }, t('not_found'))); }
    });
  });

  document.getElementById('attach-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var code = document.getElementById('attach-code').value.trim();
    if (!code) { return; }
    api('POST', '/staff/api/attach', { code: code }).then(function (r) {
      if (!r.ok) { show(sellResult, errorText(r), true); return; }
      basket.customer = r.data;
      saveBasket();
      drawBasket();
    });
  });

  /* The queue: sales and orders wait here (localStorage) until the edge has recorded them. */
  var queue = JSON.parse(localStorage.getItem(QUEUE_KEY) || '[]');
  var pending = document.getElementById('pending');
  var flushing = false;

  function saveQueue() {
    localStorage.setItem(QUEUE_KEY, JSON.stringify(queue));
    pending.setAttribute('data-pending', String(queue.length));
    pending.textContent = t('pending', { num: queue.length });
    pending.hidden = queue.length === 0;
  }

  function flush() {
    if (flushing || !queue.length) { return; }
    flushing = true;
    var entry = queue[0];
    api('POST', entry.path, entry.body).then(function (r) {
      flushing = false;
      if (r.ok || (r.status >= 400 && r.status < 500 && r.status !== 401 && r.status !== 408 && r.status !== 429)) {
        queue.shift();
        saveQueue();
        if (!r.ok) { show(sellResult, t('error', { message: errorText(r) }), true); }
        else if (entry.path === '/staff/api/orders') { show(sellResult, t('order_recorded', { order: r.data.order_id })); }
        else { show(sellResult, t('sale_recorded')); }
        flush();
      }
    }, function () {
      flushing = false;  // no connection: the entry stays queued
    });
  }

  function enqueue(path, body) {
    queue.push({ path: path, body: body });
    saveQueue();
    basket = { lines: [], customer: null };
    saveBasket();
    drawBasket();
    show(sellResult, t('sale_queued'));
    flush();
  }

  function lines() { return basket.lines.map(function (l) { return { sku: l.sku, qty: l.qty, price: l.price }; }); }

  document.getElementById('checkout-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (!basket.lines.length) { show(sellResult, t('basket_empty'), true); return; }
    enqueue('/staff/api/sales', {
      client_id: newId(), items: lines(), made_at: Date.now(),
      customer: basket.customer ? basket.customer.customer : undefined,
      payment: { method: document.getElementById('pay-method').value,
                 reference: document.getElementById('pay-ref').value.trim() }
    });
    document.getElementById('pay-ref').value = '';
  });

  document.getElementById('order-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (!basket.lines.length) { show(sellResult, t('basket_empty'), true); return; }
    var fulfilment = document.querySelector('input[name="fulfilment"]:checked').value;
    enqueue('/staff/api/orders', {
      client_id: newId(), fulfilment: fulfilment,
      items: basket.lines.map(function (l) { return { sku: l.sku, qty: l.qty }; }),
      pickup_store: fulfilment === 'pickup' ? document.getElementById('order-store').value.trim() : undefined,
      customer: basket.customer ? basket.customer.customer : undefined
    });
  });

  window.addEventListener('online', flush);
  setInterval(flush, 3000);
  saveQueue();
  drawBasket();
  flush();
})();

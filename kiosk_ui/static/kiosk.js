/* Kiosk: identify (loyalty code or anonymous), see your lists, browse, add to the bag, continue on
 * your phone. Every action is an event, POSTed to /api/v1/events with the kiosk token; events carry
 * an id, so a retry after a network error is recorded once. Text from profiles only ever goes in
 * with textContent.
 */
(function () {
  'use strict';

  var boot = JSON.parse(document.getElementById('boot').textContent);
  var $ = function (id) { return document.getElementById(id); };
  var views = { welcome: $('welcome'), home: $('home') };

  var session = null;
  var customer = null;
  var bag = [];
  var seq = 0;
  var lastTouch = Date.now();
  var openProduct = null;

  // --- helpers ------------------------------------------------------------------------------------
  function randomId() {
    var bytes = new Uint8Array(9);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function price(p) {
    return typeof p === 'number' ? '\u20ac' + (p % 1 ? p.toFixed(2) : p.toFixed(0)) : '';
  }

  function api(method, path, body) {
    var init = { method: method, headers: { 'Authorization': 'Bearer ' + boot.token }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var err = new Error((data.error && data.error.message) || ('HTTP ' + r.status));
          err.status = r.status;
          throw err;
        }
        return data;
      });
    });
  }

  // --- events: an in-memory outbox, sent in order, retried on network and server errors -------------
  var outbox = [];
  var sending = false;
  var backoff = 500;

  function sendEvent(type, extra) {
    var event = { id: session + '-' + (++seq), ts: Date.now(), type: type, session: session };
    if (customer) { event.customer = customer; }
    Object.keys(extra || {}).forEach(function (k) { event[k] = extra[k]; });
    outbox.push({ kind: 'kiosk', device: boot.kiosk, event: event });
    flush();
  }

  function flush() {
    if (sending || !outbox.length) { return; }
    sending = true;
    api('POST', '/api/v1/events', outbox[0]).then(function () {
      outbox.shift();
      backoff = 500;
      sending = false;
      flush();
    }, function (err) {
      sending = false;
      if (err.status && err.status >= 400 && err.status < 500) {
        outbox.shift(); // the edge will never take it: do not block the ones behind it
        if (window.console) { console.warn('kiosk event refused:', err.message); }
        flush();
        return;
      }
      setTimeout(flush, backoff);
      backoff = Math.min(backoff * 2, 15000);
    });
  }

  // --- views ----------------------------------------------------------------------------------------
  function show(name) {
    Object.keys(views).forEach(function (k) { views[k].hidden = k !== name; });
    document.body.setAttribute('data-view', name);
    $('session-bar').hidden = name === 'welcome';
    $('main').scrollTop = 0;
  }

  function productCard(p) {
    var card = el('button', 'product-card');
    card.type = 'button';
    card.setAttribute('data-sku', p.sku);
    var swatch = el('span', 'swatch cat-' + (p.category || 'other'), p.category || '');
    card.appendChild(swatch);
    card.appendChild(el('span', 'name', p.name));
    card.appendChild(el('span', 'price', price(p.price)));
    card.addEventListener('click', function () { browse(p); });
    return card;
  }

  function chip(p) {
    var li = el('li');
    var b = el('button', '', p.name);
    b.type = 'button';
    b.setAttribute('data-sku', p.sku);
    b.addEventListener('click', function () { browse(p); });
    li.appendChild(b);
    return li;
  }

  function fill(listId, items, make) {
    var panel = $(listId);
    var list = panel.querySelector('ul');
    list.textContent = '';
    items.forEach(function (item) { list.appendChild(make(item)); });
    panel.hidden = !items.length;
    return items.length;
  }

  function renderHome(ctx) {
    var personal = ctx && ctx.personalized;
    var greeting = $('greeting');
    greeting.textContent = personal && ctx.first_name ? 'Hi, ' + ctx.first_name + '!' : 'Welcome!';
    $('home-lead').textContent = personal
      ? 'Here is what you saved online. Tap a product to see it.'
      : 'Tap a product to see it, add it to your bag, and take the bag with you on your phone.';
    var shown = 0;
    if (personal) {
      shown += fill('orders', ctx.orders_ready || [], function (o) {
        var text = 'Order ' + o.order_id + (o.pickup_bay ? ' \u00b7 bay ' + o.pickup_bay : '') +
          (o.items && o.items.length ? ': ' + o.items.join(', ') : '');
        return el('li', '', text);
      });
      shown += fill('wishlist', ctx.wishlist || [], chip);
      shown += fill('online-cart', ctx.cart || [], chip);
    } else {
      ['orders', 'wishlist', 'online-cart'].forEach(function (id) {
        $(id).hidden = true;
        $(id).querySelector('ul').textContent = '';
      });
    }
    $('personal').hidden = !shown;
    var grid = $('products');
    grid.textContent = '';
    (boot.products || []).forEach(function (p) { grid.appendChild(productCard(p)); });
    updateBag();
    show('home');
  }

  function updateBag() {
    var n = bag.length;
    $('bag-count').textContent = 'Bag: ' + n + (n === 1 ? ' item' : ' items');
  }

  // --- actions --------------------------------------------------------------------------------------
  function startSession() {
    session = randomId();
    seq = 0;
    customer = null;
    bag = [];
  }

  function identify(code) {
    var error = $('identify-error');
    error.hidden = true;
    code = (code || '').trim();
    if (!code) {
      error.textContent = 'Type or scan your loyalty card number, or tap \u201cStay anonymous\u201d.';
      error.hidden = false;
      return;
    }
    startSession();
    api('GET', '/kiosk/' + encodeURIComponent(boot.kiosk) + '/context?customer=' + encodeURIComponent(code))
      .then(function (ctx) {
        if (ctx.customer) {
          customer = ctx.customer;
          sendEvent('identify', {});
        } else {
          sendEvent('identify', { identity: code.indexOf(':') >= 0 ? code : 'loyalty:' + code });
        }
        $('code').value = '';
        renderHome(ctx);
        if (!ctx.known) {
          $('home-lead').textContent = 'We could not find that card here, but you can browse and take your bag with you.';
        }
      }, function () {
        // The edge is unreachable: browse anonymously rather than block the shopper.
        sendEvent('identify', { identity: code.indexOf(':') >= 0 ? code : 'loyalty:' + code });
        $('code').value = '';
        renderHome(null);
      });
  }

  function anonymous() {
    startSession();
    sendEvent('anonymous', {});
    renderHome(null);
  }

  function browse(p) {
    openProduct = p;
    sendEvent('browse', { item: p.sku });
    var sheet = $('product');
    var swatch = sheet.querySelector('.swatch');
    swatch.className = 'swatch cat-' + (p.category || 'other');
    swatch.textContent = p.category || '';
    sheet.querySelector('.name').textContent = p.name;
    sheet.querySelector('.meta').textContent = p.zone ? 'Find it in ' + p.zone : '';
    sheet.querySelector('.price').textContent = price(p.price);
    var add = $('add');
    var inBag = bag.indexOf(p.sku) >= 0;
    add.textContent = inBag ? 'In your bag \u2713' : 'Add to bag';
    add.disabled = inBag;
    sheet.hidden = false;
  }

  function addToBag() {
    if (!openProduct || bag.indexOf(openProduct.sku) >= 0) { return; }
    bag.push(openProduct.sku);
    sendEvent('add_to_cart', { item: openProduct.sku });
    updateBag();
    $('add').textContent = 'In your bag \u2713';
    $('add').disabled = true;
  }

  function handoff() {
    var overlay = $('qr');
    var img = $('qr-img');
    var error = $('qr-error');
    img.hidden = true;
    img.removeAttribute('src');
    error.hidden = true;
    overlay.hidden = false;
    sendEvent('handoff', bag.length ? { items: bag.slice(0, 20) } : {});
    var body = { session: session };
    if (customer) { body.customer = customer; }
    api('POST', '/kiosk/' + encodeURIComponent(boot.kiosk) + '/handoff', body).then(function (data) {
      img.src = 'data:image/png;base64,' + data.png_base64;
      img.hidden = false;
    }, function () {
      error.textContent = 'The code cannot be shown right now. Please ask a member of staff.';
      error.hidden = false;
    });
  }

  function endSession() {
    session = null;
    customer = null;
    bag = [];
    openProduct = null;
    $('product').hidden = true;
    $('qr').hidden = true;
    $('qr-img').removeAttribute('src');
    // Leave nothing personal behind in the page.
    $('greeting').textContent = 'Welcome';
    ['orders', 'wishlist', 'online-cart'].forEach(function (id) { $(id).querySelector('ul').textContent = ''; });
    $('code').value = '';
    $('identify-error').hidden = true;
    show('welcome');
  }

  // --- wiring -------------------------------------------------------------------------------------
  $('identify-form').addEventListener('submit', function (e) {
    e.preventDefault();
    identify($('code').value);
  });
  $('keypad').addEventListener('click', function (e) {
    var key = e.target.getAttribute && e.target.getAttribute('data-key');
    if (!key) { return; }
    var input = $('code');
    if (key === 'clear') { input.value = ''; } else if (key === 'back') { input.value = input.value.slice(0, -1); } else if (input.value.length < 64) { input.value += key; }
  });
  $('anonymous').addEventListener('click', anonymous);
  $('add').addEventListener('click', addToBag);
  $('close-product').addEventListener('click', function () { $('product').hidden = true; openProduct = null; });
  $('handoff').addEventListener('click', handoff);
  $('qr-done').addEventListener('click', endSession);
  $('finish').addEventListener('click', endSession);

  ['pointerdown', 'keydown'].forEach(function (type) {
    document.addEventListener(type, function () { lastTouch = Date.now(); }, true);
  });
  setInterval(function () {
    if (session && Date.now() - lastTouch > boot.idle_s * 1000) { endSession(); }
  }, 1000);

  // --- content pushed to this kiosk by rules (e.g. a greeting after identify) ---------------------------
  var pushed = $('pushed');
  var pushedTimer = null;
  var clockOffset = 0;
  function onContent(view, serverNow) {
    if (typeof serverNow === 'number') { clockOffset = Date.now() - serverNow; }
    if (pushedTimer) { clearTimeout(pushedTimer); pushedTimer = null; }
    if (!view || view.idle) {
      pushed.hidden = true;
      pushed.removeAttribute('data-content-id');
      return;
    }
    pushed.setAttribute('data-content-id', view.content_id);
    pushed.querySelector('.title').textContent = view.title || '';
    pushed.querySelector('.body').textContent = view.body || '';
    pushed.hidden = false;
    if (typeof view.expires_at === 'number') {
      pushedTimer = setTimeout(function () { pushed.hidden = true; }, Math.max(0, view.expires_at + clockOffset - Date.now() + 500));
    }
  }
  window.InstoreLive(window.InstoreLive.streamUrl(window.location.pathname + '/stream'), onContent, function (online) {
    $('offline').hidden = online;
    document.body.setAttribute('data-online', online ? 'yes' : 'no');
  });

  show('welcome');
  $('code').focus();
})();

/* Kiosk: identify (loyalty code or anonymous), see your lists, browse, add to the bag, continue on
 * your phone. Every action is an event, POSTed to /api/v1/events with the kiosk token; events carry
 * an id, so a retry after a network error is recorded once. Text from profiles only ever goes in
 * with textContent. Texts come from the edge's catalogues (boot.strings, i18n.js); the shopper may
 * switch language, and the kiosk goes back to the store's language when the session ends or idles.
 */
(function () {
  'use strict';

  var boot = JSON.parse(document.getElementById('boot').textContent);
  var i18n = window.InstoreI18n(boot.strings, boot.lang);
  var t = i18n.t;
  var $ = function (id) { return document.getElementById(id); };
  var views = { welcome: $('welcome'), home: $('home') };

  var session = null;
  var customer = null;
  var bag = [];
  var seq = 0;
  var lastTouch = Date.now();
  var openProduct = null;
  var lastContext = null;  // what the home view shows, drawn again when the language changes
  var pushedView = null;

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

  /* A product's name and price in the kiosk's language (the edge formats prices: boot products and
   * context items carry texts per language). */
  function productText(p, field) {
    var texts = p.texts && (p.texts[i18n.lang] || p.texts[boot.lang]);
    if (texts && texts[field] !== undefined && texts[field] !== null) { return texts[field]; }
    return field === 'name' ? p.name : '';
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
    card.appendChild(el('span', 'name', productText(p, 'name')));
    card.appendChild(el('span', 'price', productText(p, 'price')));
    card.addEventListener('click', function () { browse(p); });
    return card;
  }

  function chip(p) {
    var li = el('li');
    var b = el('button', '', productText(p, 'name'));
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
    lastContext = ctx;
    var personal = ctx && ctx.personalized;
    var greeting = $('greeting');
    greeting.textContent = personal && ctx.first_name ? t('hi_name', { name: ctx.first_name }) : t('welcome_exclaim');
    $('home-lead').textContent = ctx && ctx.unknownCard ? t('lead_unknown_card')
      : (personal ? t('lead_personal') : t('lead_anonymous'));
    $('around-you').textContent = t('around_you', { zone: boot.zone_name });
    var shown = 0;
    if (personal) {
      shown += fill('orders', ctx.orders_ready || [], function (o) {
        var items = (o.items || []).map(function (p) { return typeof p === 'string' ? p : productText(p, 'name'); });
        var text = t('order_line', { order: o.order_id }) +
          (o.pickup_bay ? ' \u00b7 ' + t('order_bay', { bay: o.pickup_bay }) : '') +
          (items.length ? ': ' + items.join(', ') : '');
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
    $('bag-count').textContent = i18n.n('bag_count', n);
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
      error.textContent = t('need_code');
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
        if (!ctx.known) { ctx.unknownCard = true; }
        renderHome(ctx);
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
    renderProduct(p);
    sheet.hidden = false;
  }

  function renderProduct(p) {
    var sheet = $('product');
    sheet.querySelector('.name').textContent = productText(p, 'name');
    sheet.querySelector('.meta').textContent = p.zone ? t('find_it_in', { zone: p.zone }) : '';
    sheet.querySelector('.price').textContent = productText(p, 'price');
    var add = $('add');
    var inBag = bag.indexOf(p.sku) >= 0;
    add.textContent = inBag ? t('in_bag') : t('add_to_bag');
    add.disabled = inBag;
  }

  function addToBag() {
    if (!openProduct || bag.indexOf(openProduct.sku) >= 0) { return; }
    bag.push(openProduct.sku);
    sendEvent('add_to_cart', { item: openProduct.sku });
    updateBag();
    $('add').textContent = t('in_bag');
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
      error.textContent = t('qr_error');
      error.hidden = false;
    });
  }

  // "Call an associate": an `assist` event (a session is started if none is open); the staff feed shows it.
  function callAssociate() {
    if (!session) { startSession(); }
    sendEvent('assist', {});
    $('assist-sent').hidden = false;
    setTimeout(function () { $('assist-sent').hidden = true; }, 8000);
  }

  function endSession() {
    session = null;
    customer = null;
    bag = [];
    openProduct = null;
    $('product').hidden = true;
    $('qr').hidden = true;
    $('qr-img').removeAttribute('src');
    lastContext = null;
    // Leave nothing personal behind in the page, and speak the store's language again.
    useLanguage(boot.lang);
    $('greeting').textContent = t('welcome');
    ['orders', 'wishlist', 'online-cart'].forEach(function (id) { $(id).querySelector('ul').textContent = ''; });
    $('code').value = '';
    $('identify-error').hidden = true;
    show('welcome');
  }

  // --- language: a shopper's pick lasts for the session; the store's language comes back when it ends --
  function useLanguage(code) {
    if (!i18n.use(code)) { return; }
    Array.prototype.forEach.call(document.querySelectorAll('#languages [data-lang]'), function (b) {
      b.setAttribute('aria-pressed', b.getAttribute('data-lang') === code ? 'true' : 'false');
    });
    updateBag();
    if (!$('identify-error').hidden) { $('identify-error').textContent = t('need_code'); }
    if (!$('qr-error').hidden) { $('qr-error').textContent = t('qr_error'); }
    if (session && !views.home.hidden) {
      var scroll = $('main').scrollTop;
      renderHome(lastContext);
      $('main').scrollTop = scroll;
    }
    if (openProduct) { renderProduct(openProduct); }
    if (pushedView) { showPushed(pushedView); }
    document.body.setAttribute('data-lang', code);
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
  $('call-associate').addEventListener('click', callAssociate);
  $('add').addEventListener('click', addToBag);
  $('close-product').addEventListener('click', function () { $('product').hidden = true; openProduct = null; });
  $('handoff').addEventListener('click', handoff);
  $('qr-done').addEventListener('click', endSession);
  $('finish').addEventListener('click', endSession);
  $('languages').addEventListener('click', function (e) {
    var button = e.target.closest && e.target.closest('[data-lang]');
    if (button) { useLanguage(button.getAttribute('data-lang')); }
  });

  ['pointerdown', 'keydown'].forEach(function (type) {
    document.addEventListener(type, function () { lastTouch = Date.now(); }, true);
  });
  setInterval(function () {
    if ((session || i18n.lang !== boot.lang) && Date.now() - lastTouch > boot.idle_s * 1000) { endSession(); }
  }, 1000);

  // --- content pushed to this kiosk by rules (e.g. a greeting after identify) ---------------------------
  var pushed = $('pushed');
  var pushedTimer = null;
  var clockOffset = 0;
  function onContent(view, serverNow) {
    if (typeof serverNow === 'number') { clockOffset = Date.now() - serverNow; }
    if (pushedTimer) { clearTimeout(pushedTimer); pushedTimer = null; }
    if (!view || view.idle) {
      pushedView = null;
      pushed.hidden = true;
      pushed.removeAttribute('data-content-id');
      return;
    }
    showPushed(view);
    pushed.hidden = false;
    if (typeof view.expires_at === 'number') {
      pushedTimer = setTimeout(function () { pushed.hidden = true; pushedView = null; },
                               Math.max(0, view.expires_at + clockOffset - Date.now() + 500));
    }
  }

  /* Pushed content in the kiosk's language (the edge sends its texts in every language). */
  function showPushed(view) {
    pushedView = view;
    var texts = (view.texts && view.texts[i18n.lang]) || view;
    pushed.setAttribute('data-content-id', view.content_id);
    pushed.querySelector('.title').textContent = texts.title || '';
    pushed.querySelector('.body').textContent = texts.body || '';
  }
  /* Products changed at the edge (a price from the central, a name): swap them in and draw again what shows
   * them, so the kiosk never shows a stale price. */
  function onCatalogue(message) {
    var changed = {};
    (message.products || []).forEach(function (p) { changed[p.sku] = p; });
    var gone = message.deleted || [];
    function swap(list) {
      return (list || []).filter(function (p) { return gone.indexOf(p.sku) < 0; })
        .map(function (p) { return changed[p.sku] || p; });
    }
    var known = {};
    (boot.products || []).forEach(function (p) { known[p.sku] = true; });
    boot.products = swap(boot.products);
    Object.keys(changed).forEach(function (sku) {
      if (!known[sku] && changed[sku].zone === boot.zone && boot.products.length < 12) { boot.products.push(changed[sku]); }
    });
    if (lastContext) {
      lastContext.wishlist = swap(lastContext.wishlist);
      lastContext.cart = swap(lastContext.cart);
    }
    if (!views.home.hidden) {
      var scroll = $('main').scrollTop;
      renderHome(lastContext);
      $('main').scrollTop = scroll;
    }
    if (openProduct && changed[openProduct.sku]) {
      openProduct = changed[openProduct.sku];
      renderProduct(openProduct);
    }
    document.body.setAttribute('data-catalogue', String(message.now || ''));
  }

  window.InstoreLive(window.InstoreLive.streamUrl(window.location.pathname + '/stream'), onContent, function (online) {
    $('offline').hidden = online;
    document.body.setAttribute('data-online', online ? 'yes' : 'no');
  }, { catalogue: onCatalogue });

  document.body.setAttribute('data-lang', boot.lang);
  updateBag();
  show('welcome');
  $('code').focus();
})();

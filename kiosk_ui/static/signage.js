/* Signage player: cycles the screen's playlist, switches to content pushed over SSE, goes back to the
 * playlist when that content expires (the edge sends the playlist then; the page also expires it
 * itself, in case that message is lost), and keeps playing its last playlist while the edge is away.
 * All text goes in with textContent: nothing from the server is ever parsed as HTML.
 */
(function () {
  'use strict';

  var EXPIRY_GRACE_MS = 500;
  var boot = JSON.parse(document.getElementById('boot').textContent);
  var stage = document.getElementById('stage');
  var slide = stage.querySelector('.slide');
  var media = stage.querySelector('.media');
  var kicker = stage.querySelector('.kicker');
  var title = stage.querySelector('.title');
  var body = stage.querySelector('.body');
  var price = stage.querySelector('.price');
  var bar = document.getElementById('progress');
  var offlineDot = document.getElementById('offline');

  var playlist = [];
  var playlistKey = null;
  var mode = null;        // 'playlist' | 'rule'
  var current = null;     // the rule content on screen
  var index = 0;
  var slideTimer = null;
  var expiryTimer = null;
  var clockOffset = 0;    // this device's clock minus the edge's
  var shown = null;       // the item on screen (its product's price is redrawn when the catalogue changes)

  /* The advertised product's price, from the edge's catalogue, in the store's language. */
  function showPrice(item) {
    var p = item && item.product;
    var texts = p && p.texts && p.texts[boot.lang];
    price.textContent = texts && texts.price ? texts.price : '';
    price.hidden = !price.textContent;
    if (p) { price.setAttribute('data-sku', p.sku); } else { price.removeAttribute('data-sku'); }
  }

  function clearTimers() {
    if (slideTimer) { clearTimeout(slideTimer); slideTimer = null; }
    if (expiryTimer) { clearTimeout(expiryTimer); expiryTimer = null; }
  }

  function render(item, kind) {
    stage.setAttribute('data-content-id', item.content_id || '');
    stage.setAttribute('data-kind', kind);
    stage.setAttribute('data-template', item.template || '');
    kicker.textContent = item.subtitle || '';
    title.textContent = item.title || '';
    body.textContent = item.body || '';
    shown = item;
    showPrice(item);
    if (item.image) {
      media.src = item.image;
      media.hidden = false;
    } else {
      media.hidden = true;
      media.removeAttribute('src');
    }
    slide.classList.remove('enter');
    void slide.offsetWidth; // restart the entrance animation
    slide.classList.add('enter');
  }

  function progress(ms) {
    bar.style.transition = 'none';
    bar.style.transform = 'scaleX(0)';
    void bar.offsetWidth;
    if (ms > 0) {
      bar.style.transition = 'transform ' + ms + 'ms linear';
      bar.style.transform = 'scaleX(1)';
    }
  }

  function play(i) {
    clearTimers();
    mode = 'playlist';
    current = null;
    if (!playlist.length) {
      render({ content_id: 'playlist', template: 'playlist', title: boot.store, body: '' }, 'playlist');
      progress(0);
      return;
    }
    index = i % playlist.length;
    var item = playlist[index];
    render(item, 'playlist');
    if (playlist.length > 1) {
      var ms = Math.max(1, Number(item.duration_s) || 8) * 1000;
      progress(ms);
      slideTimer = setTimeout(function () { play(index + 1); }, ms);
    } else {
      progress(0);
    }
  }

  function setPlaylist(items) {
    var key = JSON.stringify(items || []);
    if (key === playlistKey) { return false; }
    playlist = items || [];
    playlistKey = key;
    return true;
  }

  function apply(view, serverNow) {
    if (typeof serverNow === 'number') { clockOffset = Date.now() - serverNow; }
    if (!view) { return; }
    if (view.content_id === 'playlist') {
      var changed = setPlaylist(view.items);
      if (mode !== 'playlist' || changed) { play(0); }
      return;
    }
    var expiresAt = typeof view.expires_at === 'number' ? view.expires_at + clockOffset : null;
    if (expiresAt !== null && expiresAt <= Date.now()) {
      if (mode !== 'playlist') { play(0); }
      return;
    }
    if (mode === 'rule' && current && current.content_id === view.content_id && current.ts === view.ts) {
      return; // the same content again (a reconnect re-sync): keep it as it is
    }
    clearTimers();
    mode = 'rule';
    current = view;
    render(view, 'rule');
    progress(0);
    if (expiresAt !== null) {
      expiryTimer = setTimeout(function () { play(0); }, expiresAt - Date.now() + EXPIRY_GRACE_MS);
    }
  }

  /* Products changed (a new price from the central): every item that shows one takes it, and the one on
   * screen redraws its price at once, without restarting the slide. */
  function onCatalogue(message) {
    var changed = {};
    (message.products || []).forEach(function (p) { changed[p.sku] = p; });
    (message.deleted || []).forEach(function (sku) { changed[sku] = null; });
    function swap(item) {
      if (item && item.product && Object.prototype.hasOwnProperty.call(changed, item.product.sku)) {
        item.product = changed[item.product.sku];
      }
    }
    playlist.forEach(swap);
    swap(current);
    swap(shown);
    if (shown) { showPrice(shown); }
  }

  function setOnline(online) {
    offlineDot.hidden = online;
    document.body.setAttribute('data-online', online ? 'yes' : 'no');
  }

  setPlaylist(boot.playlist);
  if (boot.content) { apply(boot.content, boot.now); } else { play(0); }
  window.InstoreLive(window.InstoreLive.streamUrl(window.location.pathname + '/stream'), apply, setOnline,
                     { catalogue: onCatalogue });
})();

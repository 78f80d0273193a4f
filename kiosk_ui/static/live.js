/* Live content over server-sent events, for the signage player and the kiosk.
 *
 * EventSource reconnects by itself after a network error, but gives up for good on an HTTP error
 * (e.g. 503 when all streams are taken) and cannot see a silently dead connection: this wrapper
 * starts a new one in both cases (the server sends a "ping" event every ~15 s).
 * Every "content" message carries the whole state, so a reconnect re-syncs the page. Other named events
 * (e.g. "catalogue": products whose price or name changed) go to `handlers[name](message)`.
 */
(function () {
  'use strict';

  var WATCHDOG_MS = 40000;   // no message (content or ping) for this long: reconnect
  var RETRY_CLOSED_MS = 3000;
  var OFFLINE_AFTER_MS = 3000; // a quick reconnect does not flash the offline dot

  window.InstoreLive = function (url, onContent, onOnline, handlers) {
    var es = null;
    var lastSeen = Date.now();
    var retryTimer = null;
    var offlineTimer = null;
    var online = null;

    function setOnline(value) {
      if (value) {
        if (offlineTimer) { clearTimeout(offlineTimer); offlineTimer = null; }
        if (online !== true) { online = true; onOnline(true); }
      } else if (online !== false && !offlineTimer) {
        offlineTimer = setTimeout(function () {
          offlineTimer = null;
          online = false;
          onOnline(false);
        }, OFFLINE_AFTER_MS);
      }
    }

    function seen() {
      lastSeen = Date.now();
      setOnline(true);
    }

    function connect() {
      if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
      if (es) { es.close(); }
      var source = new EventSource(url);
      es = source;
      source.addEventListener('open', seen);
      source.addEventListener('hello', seen);
      source.addEventListener('ping', seen);
      source.addEventListener('content', function (event) {
        seen();
        var message;
        try { message = JSON.parse(event.data); } catch (err) { return; }
        onContent(message.content, message.now);
      });
      Object.keys(handlers || {}).forEach(function (name) {
        source.addEventListener(name, function (event) {
          seen();
          var message;
          try { message = JSON.parse(event.data); } catch (err) { return; }
          handlers[name](message);
        });
      });
      source.addEventListener('error', function () {
        if (source !== es) { return; }
        setOnline(false);
        if (source.readyState === EventSource.CLOSED && !retryTimer) {
          retryTimer = setTimeout(connect, RETRY_CLOSED_MS);
        }
      });
    }

    setInterval(function () {
      if (Date.now() - lastSeen > WATCHDOG_MS) {
        lastSeen = Date.now();
        setOnline(false);
        connect();
      }
    }, 5000);
    connect();
  };

  /* The page's stream URL: its own token when the page was opened with ?token= (else the cookie). */
  window.InstoreLive.streamUrl = function (path) {
    var token = new URLSearchParams(window.location.search).get('token');
    return token ? path + '?token=' + encodeURIComponent(token) : path;
  };
})();

/* Small hand-written SVG charts for the store dashboard: bars, a line over time, a funnel.
 *
 * Vendored on purpose (no CDN, no npm): store devices keep working without the internet and the
 * Content-Security-Policy allows only this origin. Text goes in with textContent (never innerHTML);
 * every chart is an <svg role="img"> with a <title> and <desc>, and every mark carries data-key,
 * data-label and data-value (what tests and assistive tools read) and a <title> tooltip.
 */
(function () {
  'use strict';

  var NS = 'http://www.w3.org/2000/svg';

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    if (attrs) {
      for (var k in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, k) && attrs[k] !== undefined && attrs[k] !== null) {
          node.setAttribute(k, String(attrs[k]));
        }
      }
    }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function text(parent, x, y, value, cls, anchor) {
    var t = el('text', {x: x, y: y, 'class': cls || 'lbl', 'text-anchor': anchor || 'start'}, parent);
    t.textContent = value;
    return t;
  }

  function tip(parent, value) {
    var t = el('title', null, parent);
    t.textContent = value;
  }

  function fmt(value, opts) {
    if (value === null || value === undefined || isNaN(value)) { return '—'; }
    if (opts && opts.format) { return opts.format(value); }
    var rounded = Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
    return rounded.toLocaleString('en') + (opts && opts.unit ? opts.unit : '');
  }

  /* A "nice" upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten. */
  function niceMax(v) {
    if (!(v > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) { if (steps[i] * p >= v) { return steps[i] * p; } }
    return 10 * p;
  }

  function svgRoot(container, width, height, title, desc) {
    while (container.firstChild) { container.removeChild(container.firstChild); }
    var id = (container.id || 'chart') + '-t';
    var svg = el('svg', {viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-labelledby': id + ' ' + id + 'd',
                         preserveAspectRatio: 'xMidYMid meet', 'class': 'chart-svg'}, container);
    var t = el('title', {id: id}, svg);
    t.textContent = title || '';
    var d = el('desc', {id: id + 'd'}, svg);
    d.textContent = desc || '';
    return svg;
  }

  function empty(svg, width, height, message) {
    text(svg, width / 2, height / 2, message || 'No data yet for this period', 'empty', 'middle');
  }

  function describe(items, opts) {
    return items.map(function (it) { return it.label + ': ' + fmt(it.value, opts); }).join('; ');
  }

  /* Horizontal bars, one row per item: {key, label, value, note?}. Long labels stay legible. */
  function bars(container, items, opts) {
    opts = opts || {};
    var rowH = opts.rowHeight || 56;
    var width = 640, labelW = opts.labelWidth || 170, valueW = 110;
    var height = Math.max(120, items.length * rowH + 16);
    var svg = svgRoot(container, width, height, opts.title, describe(items, opts));
    container.setAttribute('data-count', String(items.length));
    if (!items.length) { empty(svg, width, height, opts.emptyText); return svg; }
    var max = niceMax(Math.max.apply(null, items.map(function (it) { return it.value || 0; })));
    var plotW = width - labelW - valueW;
    items.forEach(function (it, i) {
      var y = 8 + i * rowH;
      var g = el('g', {'class': 'bar' + (it.cls ? ' ' + it.cls : ''), 'data-key': it.key, 'data-label': it.label,
                       'data-value': it.value === null || it.value === undefined ? '' : it.value,
                       tabindex: 0, role: 'listitem'}, svg);
      if (it.attrs) { for (var a in it.attrs) { if (Object.prototype.hasOwnProperty.call(it.attrs, a)) { g.setAttribute('data-' + a, String(it.attrs[a])); } } }
      tip(g, it.label + ': ' + fmt(it.value, opts) + (it.note ? ' (' + it.note + ')' : ''));
      text(g, labelW - 12, y + rowH / 2 + 7, it.label, 'lbl', 'end');
      el('rect', {x: labelW, y: y + 8, width: plotW, height: rowH - 20, rx: 6, 'class': 'track'}, g);
      var w = it.value > 0 ? Math.max(4, plotW * it.value / max) : 0;
      el('rect', {x: labelW, y: y + 8, width: w, height: rowH - 20, rx: 6, 'class': 'fill'}, g);
      text(g, labelW + w + 10, y + rowH / 2 + 7, fmt(it.value, opts), 'val');
      if (it.note) { text(g, width - 4, y + rowH / 2 + 7, it.note, 'note', 'end'); }
    });
    svg.setAttribute('role', 'img');
    return svg;
  }

  /* A line (with area) over time buckets: points {key, label, value}; series optional extra lines. */
  function line(container, points, opts) {
    opts = opts || {};
    var width = 960, height = 320, left = 56, right = 20, top = 20, bottom = 48;
    var svg = svgRoot(container, width, height, opts.title,
                      describe(points.filter(function (p) { return p.value; }), opts) || 'No visits in this period');
    container.setAttribute('data-count', String(points.length));
    if (!points.length) { empty(svg, width, height, opts.emptyText); return svg; }
    var max = niceMax(Math.max.apply(null, points.map(function (p) { return p.value || 0; })));
    if (opts.integer) { max = Math.max(4, Math.ceil(max / 4) * 4); }  // whole-number ticks for counts
    var plotW = width - left - right, plotH = height - top - bottom;
    var step = points.length > 1 ? plotW / (points.length - 1) : 0;
    function X(i) { return left + (points.length > 1 ? i * step : plotW / 2); }
    function Y(v) { return top + plotH - plotH * (v || 0) / max; }
    for (var k = 0; k <= 4; k++) {
      var v = max * k / 4, y = Y(v);
      el('line', {x1: left, x2: width - right, y1: y, y2: y, 'class': 'grid'}, svg);
      text(svg, left - 8, y + 6, fmt(v), 'axis', 'end');
    }
    var every = Math.max(1, Math.ceil(points.length / 12));
    points.forEach(function (p, i) {
      if (i % every === 0) { text(svg, X(i), height - 16, p.label, 'axis', 'middle'); }
    });
    var d = points.map(function (p, i) { return (i ? 'L' : 'M') + X(i).toFixed(1) + ' ' + Y(p.value).toFixed(1); })
      .join(' ');
    el('path', {d: d + ' L' + X(points.length - 1).toFixed(1) + ' ' + Y(0) + ' L' + X(0).toFixed(1) + ' ' + Y(0) + ' Z',
                'class': 'area'}, svg);
    el('path', {d: d, 'class': 'stroke'}, svg);
    var marks = el('g', {'class': 'points', role: 'list'}, svg);
    points.forEach(function (p, i) {
      var g = el('g', {'class': 'point', 'data-key': p.key, 'data-label': p.label, 'data-value': p.value || 0,
                       role: 'listitem'}, marks);
      tip(g, p.label + ': ' + fmt(p.value, opts));
      el('circle', {cx: X(i), cy: Y(p.value), r: p.value ? 6 : 3, 'class': 'dot'}, g);
    });
    return svg;
  }

  /* Funnel: decreasing steps {key, label, value}, each with its share of the first and of the previous. */
  function funnel(container, steps, opts) {
    opts = opts || {};
    var width = 640, rowH = 70, height = steps.length * rowH + 12;
    var svg = svgRoot(container, width, height, opts.title, describe(steps, opts));
    container.setAttribute('data-count', String(steps.length));
    var max = Math.max(1, Math.max.apply(null, steps.map(function (s) { return s.value || 0; })));
    var first = steps.length ? steps[0].value : 0;
    steps.forEach(function (s, i) {
      var y = 6 + i * rowH;
      var w = Math.max(s.value > 0 ? 6 : 2, (width - 20) * (s.value || 0) / max);
      var x = (width - w) / 2;
      var g = el('g', {'class': 'bar step step-' + i, 'data-key': s.key, 'data-label': s.label,
                       'data-value': s.value || 0, role: 'listitem'}, svg);
      var share = first > 0 ? Math.round(100 * (s.value || 0) / first) + '% of ' + steps[0].label.toLowerCase() : '';
      tip(g, s.label + ': ' + fmt(s.value, opts) + (i && share ? ' (' + share + ')' : ''));
      el('rect', {x: x, y: y, width: w, height: rowH - 14, rx: 8, 'class': 'fill'}, g);
      text(g, width / 2, y + (rowH - 14) / 2 + 8, s.label + ' · ' + fmt(s.value, opts), 'inbar', 'middle');
    });
    return svg;
  }

  /* A horizontal meter (0..max) with thresholds: {value, max, label, warn, bad}. */
  function meter(container, m, opts) {
    opts = opts || {};
    var width = 640, height = 96;
    var svg = svgRoot(container, width, height, opts.title, m.label + ': ' + fmt(m.value, opts));
    var ratio = m.max > 0 ? Math.min(1, (m.value || 0) / m.max) : 0;
    var level = m.bad !== undefined && m.value >= m.bad ? 'bad' : (m.warn !== undefined && m.value >= m.warn ? 'warn' : 'ok');
    var g = el('g', {'class': 'bar meter ' + level, 'data-key': m.key, 'data-label': m.label,
                     'data-value': m.value === null || m.value === undefined ? '' : m.value}, svg);
    tip(g, m.label + ': ' + fmt(m.value, opts));
    el('rect', {x: 0, y: 40, width: width, height: 36, rx: 10, 'class': 'track'}, g);
    el('rect', {x: 0, y: 40, width: Math.max(m.value > 0 ? 6 : 0, width * ratio), height: 36, rx: 10, 'class': 'fill'}, g);
    text(g, 0, 28, m.label, 'lbl');
    text(g, width, 28, fmt(m.value, opts) + (m.maxLabel ? ' / ' + m.maxLabel : ''), 'val', 'end');
    return svg;
  }

  window.InstoreCharts = {bars: bars, line: line, funnel: funnel, meter: meter, format: fmt};
}());

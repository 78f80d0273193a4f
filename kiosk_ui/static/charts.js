/* The store dashboard's charts, drawn by Chart.js (vendor/chartjs, MIT, vendored: no CDN, stores go
 * offline) with the dashboard's look: horizontal bars, a funnel, a line over the day, a meter.
 *
 * Each chart container (<div class="chart" data-chart="...">) gets a <canvas role="img"> whose
 * aria-label says the figures in words, and a table of the same figures (in a <details> under the
 * chart): screen-reader users, keyboard users and tests read the table, whose rows carry data-key,
 * data-label and data-value. Text goes in with textContent, never innerHTML.
 *
 * Nothing is clipped: category labels are fitted to a share of the chart's width (broken into lines,
 * a word too long ends in "…"; the table and the tooltip have the full text), and the value at the end
 * of a bar is drawn in room kept for it on the right. `chart.$instoreValues` lists where those values
 * were drawn, so a test can check them against the canvas.
 */
(function () {
  'use strict';

  var Chart = window.Chart;
  var FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
  var INK = '#0b1320', MUTED = '#4a5566', GRID = '#e3e7ee', TRACK = '#eef1f6';
  var BLUES = ['#1f5fbf', '#2a6fd6', '#4b86e0', '#ffb000'];
  var LEVEL = {ok: '#0a7d32', warn: '#c58a00', bad: '#b3261e'};
  var LABEL_SHARE = 0.4;  // category labels get at most this share of the chart's width

  Chart.defaults.font.family = FONT;
  Chart.defaults.color = INK;
  Chart.defaults.animation = false;  // redrawn every refresh: no motion, no work for a small store PC
  Chart.defaults.maintainAspectRatio = false;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function fmt(value, opts) {
    if (value === null || value === undefined || isNaN(value)) { return '—'; }
    if (opts && opts.format) { return opts.format(value); }
    var rounded = Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
    return rounded.toLocaleString('en') + (opts && opts.unit ? opts.unit : '');
  }

  function fontSize(container) { return container.clientWidth < 480 ? 13 : 16; }

  function fontString(size, weight) { return (weight || 'normal') + ' ' + size + 'px ' + FONT; }

  var measurer = document.createElement('canvas').getContext('2d');

  function textWidth(text, font) {
    measurer.font = font;
    return measurer.measureText(text).width;
  }

  /* A label that fits maxPx: one line, or lines broken at spaces; a word too long ends in "…". */
  function fitLabel(text, maxPx, font) {
    text = String(text);
    if (textWidth(text, font) <= maxPx) { return text; }
    var lines = [], line = '';
    // Break at spaces, and after hyphens (content ids are often "womenswear-picks").
    text.replace(/-/g, '-\u0000').split(/\s+|\u0000/).forEach(function (word) {
      if (!word) { return; }
      var joint = line && line.charAt(line.length - 1) !== '-' ? ' ' : '';
      var next = line ? line + joint + word : word;
      if (textWidth(next, font) <= maxPx || !line) { line = next; } else { lines.push(line); line = word; }
    });
    if (line) { lines.push(line); }
    if (lines.length > 2) {  // two lines at most
      lines = [lines[0], lines.slice(1).reduce(function (acc, l) {
        return acc + (acc.charAt(acc.length - 1) === '-' ? '' : ' ') + l;
      })];
    }
    return lines.map(function (l) {
      if (textWidth(l, font) <= maxPx) { return l; }
      while (l.length > 1 && textWidth(l + '…', font) > maxPx) { l = l.slice(0, -1); }
      return l + '…';
    });
  }

  /* Draws each bar's value just past its end, in the room the chart keeps on the right. */
  var valuesPlugin = {
    id: 'instoreValues',
    afterDatasetsDraw: function (chart, args, opts) {
      var texts = opts.texts || [], ctx = chart.ctx, drawn = [];
      var size = opts.size || 16;
      ctx.save();
      ctx.font = fontString(size, '700');
      ctx.fillStyle = INK;
      ctx.textBaseline = 'middle';
      chart.getDatasetMeta(0).data.forEach(function (bar, i) {
        var text = texts[i];
        if (!text) { return; }
        var width = ctx.measureText(text).width;
        var end = chart.data.datasets[0].data[i] === null ? chart.chartArea.left : bar.x;
        var x = Math.min(end + 8, chart.width - width - 2);
        ctx.fillText(text, x, bar.y);
        drawn.push({text: text, left: x, right: x + width, top: bar.y - size / 2, bottom: bar.y + size / 2});
      });
      ctx.restore();
      chart.$instoreValues = drawn;
    }
  };

  /* The chart's frame: a sized box with the canvas, then the figures as a table. Built once per container. */
  function frame(container, opts) {
    var box = container.querySelector('.chart-box');
    if (!box) {
      box = el('div', 'chart-box');
      var canvas = el('canvas');
      canvas.setAttribute('role', 'img');
      box.appendChild(canvas);
      container.appendChild(box);
      var details = el('details', 'chart-data');
      details.appendChild(el('summary', null, 'Figures'));
      var table = el('table');
      table.appendChild(el('caption'));
      table.appendChild(el('thead'));
      table.appendChild(el('tbody'));
      details.appendChild(table);
      container.appendChild(details);
    }
    var old = Chart.getChart(box.firstChild);
    if (old) { old.destroy(); }
    var empty = container.querySelector('.chart-empty');
    if (empty) { container.removeChild(empty); }
    box.hidden = false;
    return box;
  }

  /* The figures as a table: a header row, then one row per item (label, value, note). */
  function fillTable(container, items, opts) {
    var table = container.querySelector('.chart-data table');
    table.querySelector('caption').textContent = opts.title || '';
    var head = table.querySelector('thead'), body = table.querySelector('tbody');
    while (head.firstChild) { head.removeChild(head.firstChild); }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var columns = opts.columns || ['Item', 'Value'];
    var tr = el('tr');
    columns.forEach(function (c) {
      var th = el('th', null, c);
      th.setAttribute('scope', 'col');
      tr.appendChild(th);
    });
    head.appendChild(tr);
    items.forEach(function (it) {
      var row = el('tr');
      row.setAttribute('data-key', it.key);
      row.setAttribute('data-label', it.label);
      row.setAttribute('data-value', it.value === null || it.value === undefined ? '' : String(it.value));
      if (it.attrs) {
        Object.keys(it.attrs).forEach(function (a) { row.setAttribute('data-' + a, String(it.attrs[a])); });
      }
      var th = el('th', null, it.label);
      th.setAttribute('scope', 'row');
      row.appendChild(th);
      row.appendChild(el('td', null, it.text !== undefined ? it.text : fmt(it.value, opts)));
      if (columns.length > 2) { row.appendChild(el('td', null, it.note || '')); }
      body.appendChild(row);
    });
    container.setAttribute('data-count', String(items.length));
  }

  function describe(items, opts) {
    return items.map(function (it) {
      return it.label + ' ' + (it.text !== undefined ? it.text : fmt(it.value, opts));
    }).join(', ');
  }

  function label(box, opts, summary) {
    box.firstChild.setAttribute('aria-label', (opts.title || 'Chart') + ': ' + (summary || 'no data'));
  }

  function showEmpty(container, box, opts) {
    box.hidden = true;
    container.insertBefore(el('p', 'chart-empty', opts.emptyText || 'No data yet for this period'), box);
  }

  /* Horizontal bars, one row per item {key, label, value, note?, text?, color?, attrs?}. */
  function hbars(container, items, opts) {
    opts = opts || {};
    var box = frame(container, opts);
    fillTable(container, items, opts);
    label(box, opts, describe(items, opts));
    if (!items.length) { showEmpty(container, box, opts); return null; }
    var size = fontSize(container);
    var font = fontString(size, '600');
    var width = container.clientWidth || 320;
    var texts = items.map(function (it) { return it.text !== undefined ? it.text : fmt(it.value, opts); });
    var room = Math.max.apply(null, texts.map(function (t) { return textWidth(t, fontString(size, '700')); })) + 14;
    // Chart.js gives the category axis at most half the width left of the values' room; 16 px are its padding.
    var labelRoom = Math.min(width * LABEL_SHARE, (width - room) / 2 - 16);
    var labels = items.map(function (it) { return fitLabel(it.label, labelRoom, font); });
    var lines = Math.max.apply(null, labels.map(function (l) { return Array.isArray(l) ? l.length : 1; }));
    var row = Math.max(opts.rowHeight || 40, lines * (size + 4) + 14);
    box.style.height = (items.length * row + (opts.axis === false ? 12 : 44)) + 'px';
    var max = Math.max.apply(null, items.map(function (it) { return it.value || 0; }));
    return new Chart(box.firstChild, {
      type: 'bar',
      data: {
        labels: labels,
        datasets: [{
          data: items.map(function (it) { return it.value === undefined ? null : it.value; }),
          backgroundColor: items.map(function (it, i) { return it.color || (opts.colors ? opts.colors[i % opts.colors.length] : BLUES[0]); }),
          borderRadius: 6, barPercentage: 0.8, categoryPercentage: 0.9, minBarLength: 3
        }]
      },
      options: {
        indexAxis: 'y',
        responsive: true,
        layout: {padding: {right: room, top: 4}},
        scales: {
          x: {beginAtZero: true, suggestedMax: opts.max || (max > 0 ? undefined : 1), max: opts.max,
              display: opts.axis !== false, grid: {color: GRID},
              ticks: {color: MUTED, font: {size: size - 2}, maxTicksLimit: 5, maxRotation: 0, autoSkipPadding: 8,
                      precision: opts.integer ? 0 : undefined,
                      stepSize: opts.step,
                      callback: function (v) { return fmt(v, opts); }}},
          y: {grid: {display: false}, ticks: {color: INK, font: {size: size, weight: '600'}, autoSkip: false}}
        },
        plugins: {
          legend: {display: false},
          tooltip: {callbacks: {
            title: function (ctx) { return items[ctx[0].dataIndex].label; },
            label: function (ctx) {
              var it = items[ctx.dataIndex];
              return texts[ctx.dataIndex] + (it.note ? ' (' + it.note + ')' : '');
            }
          }},
          instoreValues: {texts: texts, size: size}
        }
      },
      plugins: [valuesPlugin]
    });
  }

  function bars(container, items, opts) { return hbars(container, items, opts); }

  /* Funnel: steps {key, label, value} as bars from the widest, each value with its share of the first. */
  function funnel(container, steps, opts) {
    opts = opts || {};
    var first = steps.length ? steps[0].value : 0;
    var items = steps.map(function (s, i) {
      var share = i && first > 0 ? Math.round(100 * (s.value || 0) / first) + '%' : '';
      return {key: s.key, label: s.label, value: s.value || 0, color: BLUES[i % BLUES.length],
              text: fmt(s.value || 0, opts) + (share ? ' · ' + share : ''),
              note: share ? share + ' of ' + steps[0].label.toLowerCase() : ''};
    });
    return hbars(container, items, {title: opts.title, columns: ['Step', 'Count', 'Share of the first'],
                                    integer: true, rowHeight: 46});
  }

  /* A line over time buckets: points {key, label, value}. */
  function line(container, points, opts) {
    opts = opts || {};
    var box = frame(container, opts);
    var items = points.map(function (p) { return {key: p.key, label: p.label, value: p.value || 0}; });
    fillTable(container, items, opts);
    var busy = items.filter(function (p) { return p.value; });
    label(box, opts, busy.length ? describe(busy, opts) + '; no visits in the other hours'
                                 : 'no visits in this period');
    if (!items.length) { showEmpty(container, box, opts); return null; }
    var size = fontSize(container);
    box.style.height = (container.clientWidth < 480 ? 220 : 300) + 'px';
    return new Chart(box.firstChild, {
      type: 'line',
      data: {
        labels: items.map(function (p) { return p.label; }),
        datasets: [{data: items.map(function (p) { return p.value; }), borderColor: BLUES[0], borderWidth: 3,
                    backgroundColor: 'rgba(31, 95, 191, 0.12)', fill: 'origin', cubicInterpolationMode: 'monotone',
                    pointRadius: items.map(function (p) { return p.value ? 4 : 2; }),
                    pointBackgroundColor: '#fff', pointBorderColor: BLUES[0], pointBorderWidth: 2}]
      },
      options: {
        responsive: true,
        scales: {
          x: {grid: {display: false}, ticks: {color: MUTED, font: {size: size - 2}, maxRotation: 0, autoSkipPadding: 12}},
          y: {beginAtZero: true, suggestedMax: 4, grid: {color: GRID},
              ticks: {color: MUTED, font: {size: size - 2}, precision: opts.integer ? 0 : undefined, maxTicksLimit: 6}}
        },
        plugins: {legend: {display: false},
                  tooltip: {callbacks: {label: function (ctx) { return fmt(ctx.parsed.y, opts) + ' ' + (opts.unit || ''); }}}}
      }
    });
  }

  /* A meter from 0 to max with thresholds: {key, label, value, max, warn, bad, maxLabel}. */
  function meter(container, m, opts) {
    opts = opts || {};
    var level = m.bad !== undefined && m.value >= m.bad ? 'bad' : (m.warn !== undefined && m.value >= m.warn ? 'warn' : 'ok');
    container.setAttribute('data-level', level);
    return hbars(container, [{key: m.key, label: m.label, value: m.value, color: LEVEL[level],
                              text: fmt(m.value, opts) + (m.maxLabel ? ' / ' + m.maxLabel : '')}],
                 {title: opts.title, format: opts.format, max: Math.max(m.max, m.value || 0), rowHeight: 48,
                  step: (m.value || 0) <= m.max ? m.max / 4 : undefined,
                  columns: ['Measure', 'Value']});
  }

  window.InstoreCharts = {bars: bars, line: line, funnel: funnel, meter: meter, format: fmt, fitLabel: fitLabel};
}());

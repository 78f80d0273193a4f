/* Texts for page scripts, in the page's language, from tables the edge makes out of its message catalogues
 * (boot.strings = {lang: {key: text, or {CLDR plural category: text}}}). Placeholders are %(name)s / %(num)d.
 * Nothing is formatted here: prices and dates arrive formatted by the edge (Babel), per language.
 *
 *   var i18n = InstoreI18n(boot.strings, boot.lang);
 *   i18n.t('welcome'); i18n.t('hi_name', {name: 'Giulia'}); i18n.n('bag_count', 3);
 *   i18n.use('it');   // <html lang>, and every [data-t] / [data-t-attr] element, in Italian
 */
(function () {
  'use strict';

  window.InstoreI18n = function (tables, lang) {
    var self = { lang: lang };

    function fill(text, vars) {
      return String(text).replace(/%\((\w+)\)[sd]/g, function (whole, name) {
        return vars && Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole;
      });
    }

    function table() { return tables[self.lang] || {}; }

    self.t = function (key, vars) {
      var text = table()[key];
      return fill(text === undefined ? key : text, vars);
    };

    self.n = function (key, num, vars) {
      var forms = table()[key] || {};
      var text = forms[new Intl.PluralRules(self.lang).select(num)];
      if (text === undefined) { text = forms.other; }
      var all = { num: num };
      Object.keys(vars || {}).forEach(function (k) { all[k] = vars[k]; });
      return fill(text === undefined ? key : text, all);
    };

    /* Static texts: <h1 data-t="welcome">, <img data-t-attr="alt:qr_alt; title:qr_alt">. */
    self.apply = function (root) {
      Array.prototype.forEach.call(root.querySelectorAll('[data-t]'), function (node) {
        node.textContent = self.t(node.getAttribute('data-t'));
      });
      Array.prototype.forEach.call(root.querySelectorAll('[data-t-attr]'), function (node) {
        node.getAttribute('data-t-attr').split(';').forEach(function (pair) {
          var parts = pair.split(':');
          if (parts.length === 2) { node.setAttribute(parts[0].trim(), self.t(parts[1].trim())); }
        });
      });
    };

    self.use = function (code) {
      if (!tables[code]) { return false; }
      self.lang = code;
      document.documentElement.lang = code;
      self.apply(document);
      return true;
    };

    return self;
  };
})();

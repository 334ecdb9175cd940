/* The static feature explorer: routed by hash (#site=hidden.3&feature=117), works from file://.
   Data arrive as <script> chunks that call EXPLORER.register(kind, name, payload); a site's
   chunk is loaded when first needed. Nothing is fetched from the network. */
"use strict";
var EXPLORER = (function () {
  var data = { meta: null, corpus: null, site: {} };
  var waiting = {};
  var LEVELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  var LV = {}; for (var i = 0; i < LEVELS.length; i++) LV[LEVELS[i]] = i;
  var docCache = {};
  var tableState = { site: null, sort: "fired", desc: true, limit: 200 };
  var api = { data: data, lastRenderMs: null, renders: 0 };

  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); }
  function fmt(x, d) { if (x === null || x === undefined || (typeof x === "number" && isNaN(x))) return "–"; d = d === undefined ? 3 : d; return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x).toPrecision(d); }
  function pct(x) { return (100 * x).toPrecision(3) + "%"; }
  function link(site, f, text) { return '<a href="#site=' + encodeURIComponent(site) + '&feature=' + f + '">' + esc(text || (site + " #" + f)) + "</a>"; }
  function siteFile(site) { return "explorer/data/site-" + site + ".js"; }

  // integer columns sent packed by the builder (site.py pack_ints): `width` base-64 characters each
  var PACKED = ["kind", "doc", "pos", "left", "length"];
  function unpackInts(p) {
    if (!p || typeof p.chars !== "string") return p;
    var w = p.width, s = p.chars, n = s.length / w, out = new Int32Array(n);
    for (var i = 0, c = 0; i < n; i++) {
      var v = 0;
      for (var j = 0; j < w; j++) v = (v << 6) | LV[s[c++]];
      out[i] = v;
    }
    return out;
  }

  api.register = function (kind, name, payload) {
    if (kind === "site") {
      PACKED.forEach(function (k) { payload.examples[k] = unpackInts(payload.examples[k]); });
      data.site[name] = payload;
    } else data[kind] = payload;
    var key = kind + ":" + name;
    (waiting[key] || []).forEach(function (cb) { cb(); });
    delete waiting[key];
  };

  function loadSite(site, cb) {
    if (data.site[site]) return cb();
    var key = "site:" + site;
    if (waiting[key]) { waiting[key].push(cb); return; }
    waiting[key] = [cb];
    var s = document.createElement("script");
    s.src = siteFile(site);
    s.onerror = function () { delete waiting[key]; show('<div class="missing">The data of site ' + esc(site) + " could not be loaded (" + esc(siteFile(site)) + "). " + siteLinks() + "</div>"); };
    document.head.appendChild(s);
  }

  function show(html) { document.getElementById("main").innerHTML = html; }
  function siteLinks() { return "Sites: " + data.meta.sites.map(function (s) { return '<a href="#site=' + encodeURIComponent(s) + '">' + esc(s) + "</a>"; }).join(", ") + "."; }

  function docTokens(doc) {
    if (docCache[doc]) return docCache[doc];
    var s = data.corpus[doc] || "", out = new Array(s.length / 3);
    for (var i = 0; i < out.length; i++) out[i] = (LV[s[3 * i]] << 12) | (LV[s[3 * i + 1]] << 6) | LV[s[3 * i + 2]];
    return (docCache[doc] = out);
  }
  function tokenText(id) { var t = data.meta.tokens[id]; return t === undefined ? "?" : t; }
  // a token as a label: stripped, and whitespace alone shown visibly (a newline reads \n, a space ␣)
  var WS = { " ": "\u2423", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\u00a0": "\u2423" };
  function visibleText(t) {
    var s = t.trim(); if (s || !t) return s;
    return t.split("").map(function (c) { return WS[c] || c; }).join("");
  }

  function parseHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      if (!kv) return; var p = kv.split("="); out[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
    });
    return out;
  }

  function route() {
    var t0 = performance.now(), h = parseHash(), m = data.meta;
    document.getElementById("search").value = h.q || "";
    navSites(h.site);
    if (!h.site) return done(t0, renderHome());
    if (m.sites.indexOf(h.site) < 0) return done(t0, show('<div class="missing">There is no site <b>' + esc(h.site) + "</b> in preset " + esc(m.preset) + ". " + siteLinks() + "</div>"));
    loadSite(h.site, function () {
      var d = data.site[h.site];
      if (h.feature === undefined || h.feature === "") return done(t0, renderTable(d, h.q || ""));
      var f = Number(h.feature);
      if (!/^\d+$/.test(h.feature) || f >= d.n_features)
        return done(t0, show('<div class="missing">There is no feature <b>' + esc(h.feature) + "</b> at site " + esc(h.site) + " (features are 0 to " + (d.n_features - 1) + '). <a href="#site=' + encodeURIComponent(h.site) + '">The table of ' + esc(h.site) + "</a> lists them all.</div>"));
      done(t0, renderFeature(d, f, h.partner));
    });
  }
  function done(t0) {
    api.lastRenderMs = performance.now() - t0; api.renders++;
    document.body.setAttribute("data-render-ms", api.lastRenderMs.toFixed(1));
    document.body.setAttribute("data-renders", api.renders);
    document.body.setAttribute("data-since-navigation-ms", performance.now().toFixed(1));
  }

  function navSites(current) {
    document.getElementById("sites").innerHTML = data.meta.sites.map(function (s) {
      return '<a href="#site=' + encodeURIComponent(s) + '"' + (s === current ? ' class="current"' : "") + ">" + esc(s) + "</a>";
    }).join("");
  }

  function renderHome() {
    var m = data.meta;
    show("<h1>Every feature of preset " + esc(m.preset) + "</h1><p>" + esc(m.description) + "</p><p>" +
      (m.width_sweep ? "one site read by SAEs of " + m.site_widths.join(", ") + " features (" + m.site_widths.reduce(function (a, b) { return a + b; }, 0) + " in all)"
        : m.sites.length + " sites &times; " + m.n_features + " features") + ", statistics over " + m.n_tokens.toLocaleString() +
      " tokens. Choose a site for its sortable table, or search.</p><p>" + siteLinks() + "</p>");
  }

  // ------------------------------------------------------------------ table per site
  function strongest(d, dir, f) {
    var p = d[dir]; if (!p) return null;
    var i = p.index[f][0][0]; return i >= 0 ? { f: i, v: p.values[f][0][0][0] } : null;
  }
  function labelText(d, f) { return d.label[f] >= 0 ? visibleText(tokenText(d.label[f])) : ""; }
  function explText(d, f) { return d.explanation ? d.explanation.text[f] : ""; }
  function scoreKey(d, name, f) { var x = d.explanation ? d.explanation[name][f] : NaN; return isNaN(x) ? -1 : x; }
  function matches(d, f, q) {
    if (labelText(d, f).toLowerCase().indexOf(q) >= 0) return true;
    if (explText(d, f).toLowerCase().indexOf(q) >= 0) return true;
    var e = d.examples;
    for (var j = e.start[f]; j < e.start[f + 1]; j++) {
      var toks = docTokens(e.doc[j]);
      if (tokenText(toks[e.pos[j]]).trim().toLowerCase() === q) return true;
      var title = data.meta.titles[e.doc[j]] || "";
      if (title.toLowerCase().indexOf(q) >= 0) return true;
    }
    return false;
  }
  function renderTable(d, q) {
    var m = data.meta, n = d.n_features, rows = [];
    if (tableState.site !== d.site) { tableState.site = d.site; tableState.limit = 200; }
    q = q.trim().toLowerCase();
    for (var f = 0; f < n; f++) if (!q || matches(d, f, q)) rows.push(f);
    var up = d.up ? m.sites[d.index - 1] : null, down = d.down ? m.sites[d.index + 1] : null;
    var key = {
      feature: function (f) { return f; }, fired: function (f) { return d.fired[f]; },
      frequency: function (f) { return d.fired[f]; }, max: function (f) { return d.max[f]; },
      label: function (f) { return labelText(d, f); },
      precision: function (f) { var x = d.label_precision[f]; return isNaN(x) ? -1 : x; },
      explanation: function (f) { return explText(d, f); },
      detection: function (f) { return scoreKey(d, "detection", f); },
      balanced: function (f) { return scoreKey(d, "balanced", f); },
      fuzzing: function (f) { return scoreKey(d, "fuzzing", f); },
      up: function (f) { var s = strongest(d, "up", f); return s ? s.v : -2; },
      down: function (f) { var s = strongest(d, "down", f); return s ? s.v : -2; }
    }[tableState.sort] || function (f) { return f; };
    rows.sort(function (a, b) { var x = key(a), y = key(b); var c = x < y ? -1 : x > y ? 1 : a - b; return tableState.desc ? -c : c; });
    var cols = [["feature", "feature", "l"], ["fired", "fired"], ["frequency", "frequency"], ["max", "max"],
                ["label", "token label", "l"], ["precision", "label precision"]].concat(d.explanation ?
               [["explanation", "explanation", "l"], ["detection", "detection AUROC"], ["balanced", "balanced accuracy"],
                ["fuzzing", "fuzzing"]] : []).concat([
                ["up", "strongest partner up (" + m.measures[0] + ")", "l"], ["down", "strongest partner down (" + m.measures[0] + ")", "l"]]);
    var html = "<h1>" + esc(d.site) + ": " + n + " features</h1><p class=note>" +
      (q ? rows.length + " features match &ldquo;" + esc(q) + "&rdquo; (label, explanation, example token or document title). " : "") +
      "Click a column to sort, a feature to open its page.</p><table id=features><thead><tr>" +
      cols.map(function (c) { return '<th data-sort="' + c[0] + '" class="' + (c[2] || "") + '">' + esc(c[1]) + (tableState.sort === c[0] ? (tableState.desc ? " ▼" : " ▲") : "") + "</th>"; }).join("") + "</tr></thead><tbody>";
    rows.slice(0, tableState.limit).forEach(function (f) {
      var u = strongest(d, "up", f), w = strongest(d, "down", f);
      html += "<tr><td class=l>" + link(d.site, f, "#" + f) + "</td><td>" + d.fired[f] + "</td><td>" + pct(d.fired[f] / m.n_tokens) +
        "</td><td>" + fmt(d.max[f]) + "</td><td class=l>" + esc(labelText(d, f)) + "</td><td>" + fmt(d.label_precision[f], 2) +
        (d.explanation ? "</td><td class=l>" + esc(explText(d, f)) + "</td><td>" + fmt(d.explanation.detection[f], 2) + "</td><td>" +
          fmt(d.explanation.balanced[f], 2) + "</td><td>" + fmt(d.explanation.fuzzing[f], 2) : "") +
        "</td><td class=l>" + (u ? link(up, u.f, up + " #" + u.f) + " (" + fmt(u.v, 2) + ")" : "–") +
        "</td><td class=l>" + (w ? link(down, w.f, down + " #" + w.f) + " (" + fmt(w.v, 2) + ")" : "–") + "</td></tr>";
    });
    html += "</tbody></table>";
    if (rows.length > tableState.limit) html += '<p><button class="btn" id="more">show ' + Math.min(1000, rows.length - tableState.limit) + " more of " + (rows.length - tableState.limit) + "</button></p>";
    show(html);
    Array.prototype.forEach.call(document.querySelectorAll("th[data-sort]"), function (th) {
      th.onclick = function () {
        var s = th.getAttribute("data-sort");
        tableState.desc = tableState.sort === s ? !tableState.desc : s !== "label" && s !== "feature" && s !== "explanation";
        tableState.sort = s; route();
      };
    });
    var more = document.getElementById("more");
    if (more) more.onclick = function () { tableState.limit += 1000; route(); };
  }

  // ------------------------------------------------------------------ one feature
  function histogramSvg(d, f) {
    var h = d.hist[f], edges = data.meta.edges;
    if (!h || h.length < 2) return "<p class=note>It never fired.</p>";
    var first = h[0], counts = h.slice(1), W = 560, H = 140, pad = 34;
    var mx = Math.max.apply(null, counts), bw = (W - pad) / counts.length, svg = "";
    counts.forEach(function (c, i) {
      var bh = c ? Math.max(1, (H - 30) * Math.log(1 + c) / Math.log(1 + mx)) : 0;
      var lo = first + i === 0 ? 0 : edges[first + i - 1], hi = edges[first + i];
      svg += '<rect x="' + (pad + i * bw) + '" y="' + (H - 20 - bh) + '" width="' + Math.max(1, bw - 1) + '" height="' + bh +
        '" fill="#f59e0b"><title>' + c + " tokens in [" + fmt(lo) + ", " + (hi === undefined ? "∞" : fmt(hi)) + ")</title></rect>";
    });
    var lab = function (i) { var b = first + i; return b === 0 ? "0" : fmt(edges[b - 1], 2); };
    svg += '<text x="' + pad + '" y="' + (H - 5) + '">' + lab(0) + '</text><text x="' + (W - 30) + '" y="' + (H - 5) + '">' + lab(counts.length) + "</text>";
    svg += '<text x="0" y="12">' + mx + '</text><text x="' + (W / 2 - 60) + '" y="' + (H - 5) + '">activation (log bins)</text>';
    return '<svg id="histogram" width="' + W + '" height="' + H + '" role="img" aria-label="histogram of activations">' + svg + "</svg>" +
      "<p class=note>Tokens per log-spaced activation bin (8 per decade; bar height on a log scale; hover for counts).</p>";
  }

  function levelsOf(str, start, n) { var out = new Array(n); for (var i = 0; i < n; i++) out[i] = LV[str[start + i]]; return out; }

  function exampleLine(d, j, lv, scale) {
    var e = d.examples, toks = docTokens(e.doc[j]), lo = e.pos[j] - e.left[j], html = "";
    for (var i = 0; i < e.length[j]; i++) {
      var a = lv[i] / 63, tok = tokenText(toks[lo + i]);
      html += '<span class="tok' + (lo + i === e.pos[j] ? " centre" : "") + '" data-level="' + lv[i] + '" style="background:rgba(245,130,11,' +
        a.toFixed(2) + ')" title="' + fmt(lv[i] / 63 * scale) + '">' + esc(tok) + "</span>";
    }
    return '<div class="ex"><span class="meta">' + fmt(e.value[j]) + " · " + esc(data.meta.titles[e.doc[j]] || ("doc " + e.doc[j])) +
      ", token " + e.pos[j] + "</span> " + html + "</div>";
  }

  function renderExamples(d, f, partnerSlot) {
    var e = d.examples, rc = d.recolour, m = data.meta, hi = "", lo = "", off = 0;
    for (var j = 0; j < e.start[f]; j++) off += e.length[j];
    var poff = 0, R = rc.offsets.length;
    function recoloured(j, g) { return e.kind[j] === 0 && j - e.start[g] < rc.examples; }
    for (var g = 0; g < f; g++) for (j = e.start[g]; j < e.start[g + 1] && recoloured(j, g); j++) poff += R * e.length[j];
    var scale = d.max[f], site = d.site;
    if (partnerSlot !== null) {
      var p = rc.partners[f][partnerSlot];
      site = m.sites[d.index + rc.offsets[partnerSlot]];
      var pd = data.site[site];
      scale = pd ? pd.max[p] : 1;
    }
    for (j = e.start[f]; j < e.start[f + 1]; j++) {
      var n = e.length[j], line;
      if (partnerSlot === null) line = exampleLine(d, j, levelsOf(e.levels, off, n), scale);
      else if (recoloured(j, f)) line = exampleLine(d, j, levelsOf(rc.levels, poff + partnerSlot * n, n), scale);
      else line = "";
      if (recoloured(j, f)) poff += R * n;
      if (e.kind[j] === 0) hi += line; else if (partnerSlot === null) lo += line;
      off += n;
    }
    return { hi: hi || "<p class=note>none</p>", lo: partnerSlot === null ? (lo || "<p class=note>none</p>") : "<p class=note>(recolouring shows the " + rc.examples + " highest examples)</p>" };
  }

  // ------------------------------------------------------------------ measured causal effects
  function ablation() { return data.meta.ablation || { offered: false, note: "causal effect not measured", methods: [] }; }
  function measuredIndex(d) {  // {up: {f: {g: i}}, down: ...} over the site's measured edges, built once
    if (d._measured) return d._measured;
    var out = { up: {}, down: {} }, m = d.measured || {};
    ["up", "down"].forEach(function (dir) {
      var c = m[dir]; if (!c) return;
      for (var i = 0; i < c.feature.length; i++) (out[dir][c.feature[i]] = out[dir][c.feature[i]] || {})[c.partner[i]] = i;
    });
    return (d._measured = out);
  }
  function measuredOf(d, dir, f) {  // [[partner, row], ...] of feature f in direction dir
    var map = measuredIndex(d)[dir][f] || {};
    return Object.keys(map).map(function (g) { return [Number(g), map[g]]; });
  }
  function fmtDrop(v) { return v === null || isNaN(v) ? "–" : v.toFixed(3); }
  function chosenBy(mask) {
    var ms = ablation().methods, out = [];
    for (var k = 0; k < ms.length; k++) if (mask & (1 << k)) out.push(ms[k]);
    return out.join(", ");
  }
  function dropCell(d, dir, f, g) {
    var i = (measuredIndex(d)[dir][f] || {})[g];
    if (i === undefined) return '<td class="drop" title="not measured">–</td>';
    var c = d.measured[dir], v = c.drop[i];
    var tip = (dir === "up" ? "ablating this partner" : "ablating this feature") + " drops the downstream feature by " +
      fmt(v, 3) + " on average where it fires (chosen by " + chosenBy(c.chosen_by[i]) + ")" +
      (c.silent[i] ? "; the ablated feature never fired in those windows" : "");
    return '<td class="drop measured" data-drop="' + v + '" title="' + esc(tip) + '"><b>' + fmtDrop(v) + "</b></td>";
  }

  // a width sweep: the feature's parent at the narrower width and its children at the wider one
  function widthSection(d, f) {
    var m = data.meta, w = d.widths, html = "<h2>Across widths</h2>";
    if (w.parent) {
      var up = m.sites[d.index - 1], p = w.parent[f];
      html += '<p id="parent-width">Parent at ' + esc(up) + ": " + (p >= 0 ? link(up, p, up + " #" + p) + " (necessity " + fmt(w.parent_necessity[f], 2) + ")" : "none") +
        (w.new[f] ? " &middot; <b>new</b> at this width: it fires mostly inside no narrower feature and persists from none" : "") + "</p>";
    }
    if (w.children) {
      var down = m.sites[d.index + 1], kids = [];
      for (var i = w.children.ptr[f]; i < w.children.ptr[f + 1]; i++)
        kids.push(link(down, w.children.child[i], down + " #" + w.children.child[i]) + " (" + fmt(w.children.necessity[i], 2) + ")");
      html += '<p id="children-width">Children at ' + esc(down) + ": " + (kids.length ? kids.join(", ") : "none") +
        (w.splits[f] ? " &middot; <b>splits</b>" : "") + " (their union covers " + fmt(w.recall[f], 2) + " of its firings)" +
        (w.persists[f] >= 0 ? " &middot; persists one-to-one as " + link(down, w.persists[f], down + " #" + w.persists[f]) : "") + "</p>";
    }
    return html + '<p class="note">A child fires mostly inside its parent (necessity = P(parent fires | child fires) &ge; 0.8); a feature splits when at least two children together cover at least 0.8 of its firings; it persists one-to-one when the two are mutual nearest decoder directions at cosine &ge; 0.9.</p>';
  }

  function partnerTable(d, dir, f) {
    var p = d[dir], m = data.meta, causal = ablation().offered;
    if (!p) return "<p class=note>No " + (dir === "up" ? "upstream (previous) site." : "downstream (next) site.") + "</p>";
    var other = m.sites[d.index + (dir === "up" ? -1 : 1)], seen = {}, rows = "";
    p.index[f].forEach(function (list, mi) {
      list.forEach(function (g, r) {
        if (g < 0 || seen[g]) return; seen[g] = 1;
        rows += '<tr class="partner" data-site="' + esc(other) + '" data-feature="' + g + '"><td class=l>' + link(other, g, other + " #" + g) +
          "</td>" + (causal ? dropCell(d, dir, f, g) : "") + "<td class=l>top " + (r + 1) + " by " + esc(m.measures[mi]) + "</td>" +
          p.values[f][mi][r].map(function (v) { return "<td>" + fmt(v, 3) + "</td>"; }).join("") + "<td>" + p.count[f][mi][r] + "</td></tr>";
      });
    });
    return "<table class=partners id=partners-" + dir + "><thead><tr><th class=l>feature</th>" +
      (causal ? '<th title="mean relative drop of the downstream feature where it fires when the upstream one is ablated">causal drop</th>' : "") +
      "<th class=l>listed as</th>" + m.measures.map(function (x) { return "<th>" + esc(x) + "</th>"; }).join("") + "<th>co-fired</th>" +
      "</tr></thead><tbody>" + (rows || "<tr><td class=l colspan=10>none</td></tr>") + "</tbody></table>";
  }

  function measuredLine(d, f) {
    var a = ablation(), m = data.meta;
    if (!a.offered) return '<p class="note" id="measured-line">The causal effect of a partner is not shown: ' + esc(a.note) + ".</p>";
    var listed = {}, parts = [], n = 0, inList = 0, also = [];
    ["up", "down"].forEach(function (dir) {
      var p = d[dir]; listed[dir] = {};
      if (p) p.index[f].forEach(function (list) { list.forEach(function (g) { if (g >= 0) listed[dir][g] = 1; }); });
      var mine = measuredOf(d, dir, f), other = m.sites[d.index + (dir === "up" ? -1 : 1)];
      n += mine.length;
      parts.push(mine.length + (dir === "up" ? " upstream (a partner ablated, this feature measured)" : " downstream (this feature ablated, the partner measured)"));
      mine.forEach(function (x) {
        if (listed[dir][x[0]]) { inList++; return; }
        var c = d.measured[dir];
        also.push((dir === "up" ? "↑ " : "↓ ") + link(other, x[0], other + " #" + x[0]) + " " + fmtDrop(c.drop[x[1]]) +
          ' <span class="note">(' + esc(chosenBy(c.chosen_by[x[1]])) + ")</span>");
      });
    });
    var html = '<p id="measured-line" data-measured="' + n + '" data-listed="' + inList + '"><b>Causal effect measured for ' + n +
      " of this feature's cross-layer edges</b>" + (n ? ": " + parts.join(", ") + "; " + inList + " of them are partners listed above" : "") + ".";
    if (also.length) html += " Also measured: " + also.join(", ") + ".";
    return html + '</p><p class="note">Causal drop: the mean relative drop of the downstream feature over its firing tokens (in its strongest examples) when the upstream feature is ablated (1 silences it, below 0 it grows). It was measured by the matching-methods pass (notebook 11) only for each method\'s top-1 upstream partner of sampled downstream features (' +
      a.edges.toLocaleString() + " edges in all; methods " + esc(a.methods.join(", ")) + "); other rows show –.</p>";
  }

  function neighbourList(d, f, kind) {
    var x = d[kind], vals = kind === "decoder" ? x.cosine[f] : x.count[f], out = [];
    x.index[f].forEach(function (g, i) { if (g >= 0) out.push(link(d.site, g, "#" + g) + " (" + (kind === "decoder" ? "cos " + fmt(vals[i], 2) : vals[i] + " tokens") + ")"); });
    return out.join(", ") || "none";
  }

  function effectList(ids, vals) {
    return ids.map(function (t, i) { return "<code>" + esc(visibleText(tokenText(t))) + "</code> " + fmt(vals[i], 2); }).join(", ");
  }

  function explanationStats(d, f) {
    var x = d.explanation;
    if (!x) return "";
    return '<div id="explanation"><b>explanation (held-out detection AUROC / balanced accuracy / fuzzing)</b>' +
      (x.text[f] ? "<i>" + esc(x.text[f]) + "</i>: " + fmt(x.detection[f], 2) + " / " + fmt(x.balanced[f], 2) + " / " + fmt(x.fuzzing[f], 2) : "–") + "</div>";
  }
  function explanationNote(d, f) {
    var x = d.explanation, m = data.meta.explanations;
    if (!x) return m && m.note ? '<p class="note">' + esc(m.note) + "</p>" : "";
    var why = m.kinds.map(function (k, i) {
      return x.candidates[f][i] ? esc(k) + " rule <i>" + esc(x.candidates[f][i]) + "</i> F1 " + fmt(x.candidate_f1[f][i], 2) : null;
    }).filter(function (t) { return t; }).join("; ");
    return '<p class="note" id="explanation-note">Explanation: the rule (a token, a bigram, the token before, or a word of the document\'s title) ' +
      "with the best F1 at predicting where the feature fires on the training documents" + (why ? " (" + why + ")" : "") +
      ". Scored on the held-out " + esc(m.heldout) + " (" + m.heldout_tokens.toLocaleString() + " tokens in " + m.windows.toLocaleString() +
      " windows of " + m.window + " tokens): detection AUROC and balanced accuracy, activating (" + x.activating[f].toLocaleString() +
      ") against non-activating windows; fuzzing, the balanced accuracy of the rule's tokens against the feature's inside its activating windows (0.5: chance).</p>";
  }

  function renderFeature(d, f, partnerArg) {
    var m = data.meta, e = d.examples, rc = d.recolour, slot = null;
    var lab = labelText(d, f);
    if (partnerArg !== undefined) { var s = Number(partnerArg); if (rc.partners[f][s] >= 0) slot = s; }
    if (slot !== null) {
      var otherSite = m.sites[d.index + rc.offsets[slot]];
      if (!data.site[otherSite]) { loadSite(otherSite, route); return; }
    }
    var ex = renderExamples(d, f, slot);
    var npBase = m.neuronpedia && m.neuronpedia[d.site];
    var np = npBase ? ' · <a href="' + esc(npBase + "/" + f) + '">Neuronpedia</a>' : "";
    var buttons = '<button class="btn' + (slot === null ? " on" : "") + '" data-slot="">this feature</button>';
    rc.partners[f].forEach(function (p, r) {
      if (p < 0) return;
      var site = m.sites[d.index + rc.offsets[r]];
      buttons += '<button class="btn recolour' + (slot === r ? " on" : "") + '" data-slot="' + r + '">' + esc(site) + " #" + p + "</button>";
    });
    var html = "<h1>" + esc(d.site) + " feature " + f + (lab ? " · <i>" + esc(lab) + "</i>" : "") + "</h1>" +
      '<div class="stats" id="stats">' +
      "<div><b>fired</b>" + d.fired[f].toLocaleString() + " tokens</div><div><b>frequency</b>" + pct(d.fired[f] / m.n_tokens) + "</div>" +
      "<div><b>max</b>" + fmt(d.max[f]) + "</div><div><b>mean (all tokens)</b>" + fmt(d.mean[f]) + "</div>" +
      "<div><b>token label, precision / recall on held-out tokens</b>" + (lab ? "<i>" + esc(lab) + "</i>: " + fmt(d.label_precision[f], 2) + " / " + fmt(d.label_recall[f], 2) : "–") + "</div>" +
      explanationStats(d, f) +
      '</div>' + explanationNote(d, f) + '<p class="note">Token label: the most frequent token among the highest examples (no language model). Precision: of the held-out tokens that are the label token, the share where the feature fires; recall: of the held-out tokens where it fires, the share that are the label token (' +
      m.heldout_tokens.toLocaleString() + " held-out tokens, every " + m.heldout_every + "th batch)." + np + ' · <a href="#site=' + encodeURIComponent(d.site) + '">table of ' + esc(d.site) + "</a></p>" +
      "<h2>Activations</h2>" + histogramSvg(d, f) +
      '<h2>Examples</h2><p class="note">Colour: ' + (slot === null ? "this feature's activation" : "the activation of the partner") +
      " relative to its maximum (hover a token for its value); the framed token is the example. Recolour by: " + buttons + "</p>" +
      '<div class="cols"><div><h3>Highest ' + e.kind.slice(e.start[f], e.start[f + 1]).filter(function (k) { return k === 0; }).length + '</h3><div id="examples-hi">' + ex.hi +
      '</div></div><div><h3>Lowest non-zero</h3><div id="examples-lo">' + ex.lo + "</div></div></div>" +
      (d.widths ? widthSection(d, f) : "") +
      "<h2>" + (m.width_sweep ? "Partners at the other widths" : "Across layers") + "</h2><div class=stack><div><h3>" + (m.width_sweep ? "Narrower SAE" : "Upstream partners") + (d.up ? " (" + esc(m.sites[d.index - 1]) + ")" : "") + "</h3>" + partnerTable(d, "up", f) +
      "</div><div><h3>" + (m.width_sweep ? "Wider SAE" : "Downstream partners") + (d.down ? " (" + esc(m.sites[d.index + 1]) + ")" : "") + "</h3>" + partnerTable(d, "down", f) + "</div></div>" +
      '<p class="note">Partners are the top features of the adjacent site by each measure, over all tokens of the statistics pass.</p>' +
      measuredLine(d, f) +
      "<h2>Same-site neighbours</h2><p id=\"neighbours-decoder\">The nearest by decoder cosine: " + neighbourList(d, f, "decoder") + "</p><p id=\"neighbours-graph\">In the co-activation graph: " + neighbourList(d, f, "graph") + "</p>" +
      "<h2>Effect of the decoder direction</h2>" +
      (m.causal ? "<p>Boosted tokens (direct logit effect, among the tokens of the corpus): " + effectList(d.effect.boosted[f], d.effect.boosted_value[f]) +
        "</p><p>Suppressed tokens: " + effectList(d.effect.suppressed[f], d.effect.suppressed_value[f]) + "</p>"
        : "<p>Nearest input-token embeddings (cosine): " + effectList(d.effect.boosted[f], d.effect.boosted_value[f]) + "</p>");
    show(html);
    Array.prototype.forEach.call(document.querySelectorAll("button[data-slot]"), function (b) {
      b.onclick = function () {
        var s = b.getAttribute("data-slot");
        location.hash = "site=" + encodeURIComponent(d.site) + "&feature=" + f + (s === "" ? "" : "&partner=" + s);
      };
    });
  }

  api.start = function () {
    if (!data.meta) { show('<div class="missing">The explorer\'s data (explorer/data/meta.js) is missing: build it with <code>python -m helpers explorer</code>.</div>'); return; }
    document.getElementById("preset").textContent = "preset " + data.meta.preset;
    document.getElementById("search").addEventListener("change", function (ev) {
      var h = parseHash(), site = h.site || data.meta.sites[0];
      location.hash = "site=" + encodeURIComponent(site) + (ev.target.value ? "&q=" + encodeURIComponent(ev.target.value) : "");
    });
    window.addEventListener("hashchange", route);
    route();
  };
  return api;
})();

/* The cross-layer browser: features as nodes (sites as rows), edges for a measure above a
   threshold, communities coloured; starting points: the strongest lineages (the default view,
   chosen when the data were built), all, a community, a feature's k-hop neighbourhood, a
   precomputed prompt graph or search. Plain JavaScript, no library, no
   network: the data arrive as <script> files calling BROWSER.register(kind, payload). */
var BROWSER = (function () {
  "use strict";
  var G = null, P = { prompts: [], searches: [] };
  var N = 0, E = 0, layer, feature, freq, comm, ea, eb, emask, echosen, evals = {}, ids = {}, chainStep = {}, chainX = {};
  var CAUSAL = "causal_drop";
  var st = { view: "lineages", measure: "pearson", threshold: 0.1, token: -1, hood: null };
  var vis = null, hovered = -1, lastMs = 0;
  var DEFAULTS = { pearson: 0.1, jaccard: 0.1, sufficiency: 0.5, necessity: 0.5, mutual_info: 0.01, cosine: 0.3,
                   causal_drop: 0.5 };
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"];
  var LEFT = 110, TOP = 24, RIGHT = 16, BOTTOM = 16;

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function register(kind, payload) { if (kind === "graph") G = payload; else if (kind === "prompts") P = payload; }
  function colour(c) { return c < 0 ? "#9e9e9e" : PALETTE[c % PALETTE.length]; }
  function siteOf(i) { return G.sites[layer[i]]; }
  function link(i) { return "explorer.html#site=" + encodeURIComponent(siteOf(i)) + "&feature=" + feature[i]; }
  function label(i) { return siteOf(i) + " #" + feature[i]; }
  function words(i) { return G.nodes.label ? G.nodes.label[i] : ""; }
  function measureName(m) { return (G.labels && G.labels[m]) || m; }
  function hasCausal() { return G.measures.indexOf(CAUSAL) >= 0; }
  function defaultView() { return G.default_view || "all"; }
  function lineages() { return G.lineages || { nodes: [], chains: [] }; }
  function causalInfo() { return G.causal || { note: "causal effect not measured", methods: [] }; }
  function chosenBy(e) {  // the matching methods that chose a measured edge
    var ms = causalInfo().methods || [], out = [];
    for (var k = 0; k < ms.length; k++) if (echosen[e] & (1 << k)) out.push(ms[k]);
    return out.join(", ");
  }

  function index() {
    N = G.nodes.layer.length; E = G.edges.a.length;
    layer = Int32Array.from(G.nodes.layer); feature = Int32Array.from(G.nodes.feature);
    freq = Float64Array.from(G.nodes.frequency.map(function (v) { return v === null ? 0 : v; }));
    comm = Int32Array.from(G.nodes.community);
    ea = Int32Array.from(G.edges.a); eb = Int32Array.from(G.edges.b); emask = Int32Array.from(G.edges.mask);
    echosen = new Int32Array(E);
    G.measures.forEach(function (m) {  // float64: the same comparison with the threshold as filter_edges
      if (G.edges.values[m]) { evals[m] = Float64Array.from(G.edges.values[m].map(function (v) { return v === null ? NaN : v; })); return; }
      evals[m] = new Float64Array(E).fill(NaN);  // the causal drops: stored for the measured edges only
      var c = G.causal;
      for (var j = 0; j < c.edge.length; j++) {
        evals[m][c.edge[j]] = c.drop[j] === null ? NaN : c.drop[j]; echosen[c.edge[j]] = c.chosen_by[j];
      }
    });
    for (var i = 0; i < N; i++) ids[G.sites[layer[i]] + ":" + feature[i]] = i;
    lineages().chains.forEach(function (c) { for (var k = 0; k + 1 < c.length; k++) chainStep[c[k] + ":" + c[k + 1]] = 1; });
    chainX = chainColumns();
  }

  /* ---------------------------------------------------------------- which nodes and edges */
  function passing() {  // edge indices shown for the measure and threshold
    var bit = 1 << G.measures.indexOf(st.measure), v = evals[st.measure], t = st.threshold, out = [];
    for (var e = 0; e < E; e++) if ((emask[e] & bit) && v[e] >= t) out.push(e);
    return out;
  }
  function nodeSet(edges) {
    var inSet = new Uint8Array(N), v = st.view, i, e;
    if (v === "all") { for (i = 0; i < edges.length; i++) { inSet[ea[edges[i]]] = 1; inSet[eb[edges[i]]] = 1; } }
    else if (v === "lineages") { lineages().nodes.forEach(function (n) { inSet[n] = 1; }); }
    else if (v.indexOf("community:") === 0) {
      var c = +v.slice(10); for (i = 0; i < N; i++) if (comm[i] === c) inSet[i] = 1;
    } else if (v.indexOf("prompt:") === 0) {
      var pg = P.prompts[+v.slice(7)];
      pg.nodes.forEach(function (n, j) { if (st.token < 0 || pg.acts[j][st.token] > 0) inSet[n] = 1; });
    } else if (v.indexOf("search:") === 0) {
      P.searches[+v.slice(7)].nodes.forEach(function (n) { inSet[n] = 1; });
    } else if (v === "hood" && st.hood) {  // breadth-first over the shown edges, k hops
      var adj = {}; for (i = 0; i < edges.length; i++) {
        e = edges[i]; (adj[ea[e]] = adj[ea[e]] || []).push(eb[e]); (adj[eb[e]] = adj[eb[e]] || []).push(ea[e]);
      }
      var front = [st.hood.node]; inSet[st.hood.node] = 1;
      for (var h = 0; h < st.hood.k; h++) {
        var next = [];
        front.forEach(function (n) { (adj[n] || []).forEach(function (m) { if (!inSet[m]) { inSet[m] = 1; next.push(m); } }); });
        front = next;
      }
    }
    return inSet;
  }

  /* ---------------------------------------------------------------- layout: barycentres per row */
  function chainColumns() {  // the lineages view: a column per lineage (they are disjoint), strongest left
    var chains = lineages().chains, x = {};
    chains.forEach(function (c, k) { c.forEach(function (n) { x[n] = (k + 0.5) / chains.length; }); });
    return x;
  }
  function layout(nodes, edges) {
    var S = G.sites.length, rows = [], x = new Float64Array(N), nb = {}, i, r, e;
    for (r = 0; r < S; r++) rows.push([]);
    nodes.forEach(function (n) { rows[layer[n]].push(n); });
    edges.forEach(function (e) { (nb[ea[e]] = nb[ea[e]] || []).push(eb[e]); (nb[eb[e]] = nb[eb[e]] || []).push(ea[e]); });
    if (st.view === "lineages") {  // lineages run straight down their columns
      nodes.forEach(function (n) { x[n] = chainX[n]; });
      return { x: x, rows: rows.map(function (row) { return row.sort(function (p, q) { return x[p] - x[q]; }); }), nb: nb };
    }
    var widest = Math.max.apply(null, rows.map(function (row) { return row.length; }).concat([1]));
    var gap = 1 / (widest + 1);
    function place(row, key) {  // order by key, keep positions near the key, at least `gap` apart
      row.sort(function (p, q) { return key[p] - key[q] || comm[p] - comm[q] || feature[p] - feature[q]; });
      var prev = -Infinity;
      row.forEach(function (n) { x[n] = Math.max(key[n], prev + gap); prev = x[n]; });
      if (row.length && x[row[row.length - 1]] > 1 - gap / 2) {  // squeeze into [gap/2, 1 - gap/2]
        var lo = x[row[0]], hi = x[row[row.length - 1]];
        row.forEach(function (n) { x[n] = row.length === 1 ? 0.5 : gap / 2 + (x[n] - lo) / (hi - lo) * (1 - gap); });
      }
    }
    function bary(row, from, fallback) {
      var key = {};
      row.forEach(function (n) {
        var s = 0, c = 0; (nb[n] || []).forEach(function (m) { if (layer[m] === from) { s += x[m]; c++; } });
        key[n] = c ? s / c : fallback[n];
      });
      return key;
    }
    var init = {};
    rows.forEach(function (row) {
      row.sort(function (p, q) { return comm[p] - comm[q] || feature[p] - feature[q]; });
      row.forEach(function (n, j) { init[n] = (j + 0.5) / row.length; x[n] = init[n]; });
    });
    for (var sweep = 0; sweep < 2; sweep++) {
      for (r = 1; r < S; r++) place(rows[r], bary(rows[r], r - 1, x));
      for (r = S - 2; r >= 0; r--) place(rows[r], bary(rows[r], r + 1, x));
    }
    for (r = 1; r < S; r++) place(rows[r], bary(rows[r], r - 1, x));
    var byRow = rows.map(function (row) { return row.slice().sort(function (p, q) { return x[p] - x[q]; }); });
    return { x: x, rows: byRow, nb: nb };
  }

  /* ---------------------------------------------------------------- drawing */
  function canvasGeometry() {
    var c = $("graph"), wrap = $("canvas-wrap"), dpr = window.devicePixelRatio || 1;
    var w = wrap.clientWidth, h = wrap.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    return { c: c, w: w, h: h, dpr: dpr, rowH: (h - TOP - BOTTOM) / Math.max(G.sites.length - 1, 1) };
  }
  function px(n, g) { return LEFT + vis.layout.x[n] * (g.w - LEFT - RIGHT); }
  function py(n, g) { return TOP + layer[n] * g.rowH; }

  function draw() {
    var g = canvasGeometry(), ctx = g.c.getContext("2d"), i, e;
    ctx.setTransform(g.dpr, 0, 0, g.dpr, 0, 0);
    ctx.clearRect(0, 0, g.w, g.h);
    ctx.fillStyle = "#444"; ctx.font = "12px system-ui, sans-serif"; ctx.textBaseline = "middle";
    G.sites.forEach(function (s, r) {
      ctx.fillText(s, 6, TOP + r * g.rowH);
      ctx.strokeStyle = "#eee"; ctx.beginPath(); ctx.moveTo(LEFT - 6, TOP + r * g.rowH); ctx.lineTo(g.w - RIGHT, TOP + r * g.rowH); ctx.stroke();
    });
    var edges = vis.edges, many = edges.length > 3000;
    ctx.lineWidth = many ? 0.4 : 0.8;
    ctx.strokeStyle = hovered >= 0 ? "rgba(120,120,120,0.08)" : (many ? "rgba(90,90,90,0.15)" : "rgba(90,90,90,0.4)");
    ctx.beginPath();
    for (i = 0; i < edges.length; i++) { e = edges[i]; ctx.moveTo(px(ea[e], g), py(ea[e], g)); ctx.lineTo(px(eb[e], g), py(eb[e], g)); }
    ctx.stroke();
    if (vis.chain.length) {  // the steps of the lineages, over the other edges between their features
      ctx.strokeStyle = hovered >= 0 ? "rgba(60,60,60,0.25)" : "rgba(40,40,40,0.75)"; ctx.lineWidth = 1.4; ctx.beginPath();
      vis.chain.forEach(function (e) { ctx.moveTo(px(ea[e], g), py(ea[e], g)); ctx.lineTo(px(eb[e], g), py(eb[e], g)); });
      ctx.stroke();
    }
    var hi = {};
    if (hovered >= 0) {
      ctx.strokeStyle = "rgba(200,30,30,0.85)"; ctx.lineWidth = 1.6; ctx.beginPath();
      for (i = 0; i < edges.length; i++) {
        e = edges[i];
        if (ea[e] === hovered || eb[e] === hovered) {
          hi[ea[e]] = hi[eb[e]] = 1;
          ctx.moveTo(px(ea[e], g), py(ea[e], g)); ctx.lineTo(px(eb[e], g), py(eb[e], g));
        }
      }
      ctx.stroke();
    }
    var radius = vis.nodes.length > 1500 ? 2 : (vis.nodes.length > 300 ? 3 : 4.5);
    var byColour = {};
    vis.nodes.forEach(function (n) { (byColour[colour(comm[n])] = byColour[colour(comm[n])] || []).push(n); });
    Object.keys(byColour).forEach(function (col) {
      ctx.fillStyle = col; ctx.beginPath();
      byColour[col].forEach(function (n) { var X = px(n, g), Y = py(n, g); ctx.moveTo(X + radius, Y); ctx.arc(X, Y, radius, 0, 6.2832); });
      ctx.fill();
    });
    if (hovered >= 0) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      Object.keys(hi).concat([hovered]).forEach(function (n) {
        n = +n; ctx.beginPath(); ctx.arc(px(n, g), py(n, g), radius + 2, 0, 6.2832); ctx.stroke();
      });
    }
  }

  /* ---------------------------------------------------------------- state and controls */
  function update() {
    var t0 = performance.now();
    var edges = passing(), inSet = nodeSet(edges), nodes = [], shown = [];
    for (var i = 0; i < N; i++) if (inSet[i]) nodes.push(i);
    for (var j = 0; j < edges.length; j++) if (inSet[ea[edges[j]]] && inSet[eb[edges[j]]]) shown.push(edges[j]);
    var chain = st.view === "lineages" ? shown.filter(function (e) { return chainStep[ea[e] + ":" + eb[e]]; }) : [];
    vis = { nodes: nodes, edges: shown, chain: chain, inSet: inSet, layout: layout(nodes, shown) };
    hovered = -1;
    draw();
    lastMs = performance.now() - t0;
    $("node-count").textContent = nodes.length; $("edge-count").textContent = shown.length;
    $("render-ms").textContent = "(" + lastMs.toFixed(0) + " ms)";
    $("empty").textContent = nodes.length ? "" : "Nothing to show: lower the threshold, pick another measure or another starting point.";
    showView();
    panel(-1);
    writeHash();
    return lastMs;
  }

  function setMeasure(m) {
    st.measure = m;
    var r = G.ranges[m], t = $("threshold");
    t.min = r[0]; t.max = r[1];
  }
  function setThreshold(v) { st.threshold = +v; $("threshold").value = v; $("threshold-value").textContent = (+v).toFixed(2); }

  function fillMenus() {
    $("preset").textContent = G.preset ? "(" + G.preset + ")" : "";
    var view = $("view");
    function opt(sel, value, text) { sel.appendChild(el("option", { value: value }, text)); }
    var L = lineages();
    if (L.nodes.length) opt(view, "lineages", "strongest lineages (" + L.chains.length + " lineages, " + L.nodes.length + " features; default)");
    opt(view, "all", "all features with an edge (full view)");
    G.communities.slice(0, 40).forEach(function (c) {
      opt(view, "community:" + c.id, "community " + c.id + " (" + c.size + " features, " + c.sites + " sites)");
    });
    P.prompts.forEach(function (p, i) { opt(view, "prompt:" + i, "prompt: " + p.name); });
    P.searches.forEach(function (s, i) { opt(view, "search:" + i, "search: " + s.name + (s.found ? "" : " (nothing found)")); });
    opt(view, "hood", "a feature's neighbourhood (k hops)");
    G.measures.forEach(function (m) { opt($("measure"), m, measureName(m)); });
    var note = $("measure-note");
    if (!hasCausal()) { note.textContent = "causal effect: not measured"; note.title = causalInfo().note; }
    else { note.textContent = ""; note.title = ""; }
    G.sites.forEach(function (s) { opt($("hood-site"), s, s); });
  }
  function fillTokens() {
    var sel = $("token"); sel.innerHTML = "";
    var pg = st.view.indexOf("prompt:") === 0 ? P.prompts[+st.view.slice(7)] : null;
    sel.parentNode.style.display = pg ? "" : "none";
    $("hood-controls").style.display = st.view === "hood" ? "" : "none";
    if (!pg) { st.token = -1; return; }
    sel.appendChild(el("option", { value: -1 }, "every token"));
    pg.tokens.forEach(function (t, i) { sel.appendChild(el("option", { value: i }, i + ": " + t)); });
    if (st.token >= pg.tokens.length) st.token = -1;
    sel.value = st.token;
  }

  function setView(v) {
    st.view = v; $("view").value = v; fillTokens();
  }
  function viewName() {  // the current view, in words, for the bar above the graph
    var v = st.view, L = lineages();
    if (v === "lineages") return "Strongest lineages: " + L.chains.length + " lineages, " + L.nodes.length + " features";
    if (v === "all") return "Full view: every feature with an edge";
    if (v === "hood") return st.hood ? "Neighbourhood: " + label(st.hood.node) + ", " + st.hood.k + " hop(s)" : "Neighbourhood";
    var o = $("view").options[$("view").selectedIndex];
    return o ? o.textContent.charAt(0).toUpperCase() + o.textContent.slice(1) : v;
  }
  function viewNote() {
    var L = lineages();
    if (st.view !== "lineages") return "";
    return "the page's default view: each feature chained to its best " + measureName(L.measure) + " partner >= " +
      L.threshold + " in the next site; the longest lineages first, then the strongest weakest link, at most " +
      L.max_nodes + " features";
  }
  function showView() {
    $("view-name").textContent = viewName(); $("view-note").textContent = viewNote();
    var b = $("full-view"), d = defaultView();
    b.style.display = st.view === "all" && d === "all" ? "none" : "";
    b.textContent = st.view === "all" ? "back to the " + (d === "lineages" ? "strongest lineages" : "default view")
      : "show every feature (full view)";
  }
  function setHood(site, f, k) {
    var n = ids[site + ":" + f];
    if (n === undefined) { $("empty").textContent = site + " #" + f + " never fired: no node to start from"; return false; }
    st.hood = { node: n, k: +k }; $("hood-site").value = site; $("hood-feature").value = f; $("hood-k").value = k;
    return true;
  }

  function writeHash() {
    var h = "view=" + encodeURIComponent(st.view) + "&measure=" + st.measure + "&threshold=" + st.threshold;
    if (st.view === "hood" && st.hood) h += "&site=" + encodeURIComponent(siteOf(st.hood.node)) + "&feature=" + feature[st.hood.node] + "&k=" + st.hood.k;
    if (st.token >= 0) h += "&token=" + st.token;
    if (window.history && history.replaceState) history.replaceState(null, "", "#" + h);
  }
  function readHash() {
    var q = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("="); if (p[0]) q[p[0]] = decodeURIComponent(p[1] || "");
    });
    return q;
  }

  /* ---------------------------------------------------------------- hover, click, panel */
  function nearest(evt) {
    if (!vis || !vis.nodes.length) return -1;
    var g = canvasGeometry(), rect = g.c.getBoundingClientRect();
    var mx = evt.clientX - rect.left, my = evt.clientY - rect.top;
    var r = Math.round((my - TOP) / g.rowH);
    if (r < 0 || r >= G.sites.length || Math.abs(my - (TOP + r * g.rowH)) > 10) return -1;
    var row = vis.layout.rows[r], lo = 0, hi = row.length - 1, best = -1, bd = 9;
    if (!row.length) return -1;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (px(row[mid], g) < mx) lo = mid + 1; else hi = mid; }
    [lo - 1, lo, lo + 1].forEach(function (j) {
      if (j >= 0 && j < row.length) { var d = Math.abs(px(row[j], g) - mx); if (d < bd) { bd = d; best = row[j]; } }
    });
    return best;
  }
  function panel(n) {
    var p = $("panel"); p.innerHTML = "";
    var v = st.view;
    if (v.indexOf("prompt:") === 0) {
      var pg = P.prompts[+v.slice(7)], j = n >= 0 ? pg.nodes.indexOf(n) : -1;
      p.appendChild(el("h3", {}, "Prompt: " + pg.name));
      var div = el("div", { "class": "prompt" });
      pg.tokens.forEach(function (t, i) {
        var s = el("span", {}, t); if ((j >= 0 && pg.acts[j][i] > 0) || i === st.token) s.className = "on";
        s.title = j >= 0 ? "activation " + pg.acts[j][i] : "token " + i;
        div.appendChild(s); div.appendChild(document.createTextNode(" "));
      });
      p.appendChild(div);
      if (pg.missing) p.appendChild(el("p", {}, pg.missing + " active feature(s) never fired in the corpus and are not drawn."));
    } else if (v.indexOf("search:") === 0) {
      var s = P.searches[+v.slice(7)];
      p.appendChild(el("h3", {}, "Search: " + s.name));
      p.appendChild(el("p", {}, "on all of: " + s.positives.join(" | ")));
      p.appendChild(el("p", {}, "on none of: " + (s.negatives.join(" | ") || "(no negative prompt)")));
      p.appendChild(el("p", {}, s.message));
    }
    if (n < 0) {
      if (v === "lineages") p.appendChild(el("p", {}, "The strongest lineages: " + viewNote() + ". A lineage that merges into a stronger one is left out. \"show every feature\" opens the full graph."));
      if (v.indexOf("community:") === 0) p.appendChild(el("p", {}, "Community " + v.slice(10) + " of the graph at " + G.community_rule.measure + " >= " + G.community_rule.threshold + " (Louvain); colours are communities."));
      p.appendChild(el("p", { "class": "hint" }, "Hover a feature to see its neighbours; click it to open its page in the feature explorer."));
      if (st.measure === CAUSAL) p.appendChild(el("p", { "class": "hint", id: "causal-note" }, "Causal effect: " + causalInfo().note + "."));
      else if (!hasCausal()) p.appendChild(el("p", { "class": "hint", id: "causal-note" }, "No causal measure: " + causalInfo().note + "."));
      return;
    }
    var h = el("h3"); h.appendChild(el("span", { "class": "swatch", style: "background:" + colour(comm[n]) }));
    h.appendChild(el("a", { href: link(n) }, label(n))); p.appendChild(h);
    if (words(n)) p.appendChild(el("p", {}, "top tokens: " + words(n)));
    p.appendChild(el("p", {}, "community " + (comm[n] < 0 ? "none" : comm[n]) + ", fires on " + (100 * freq[n]).toPrecision(3) + "% of tokens"));
    var table = el("table", { id: "neighbours" }), v2 = evals[st.measure], cv = hasCausal() ? evals[CAUSAL] : null;
    var causalView = st.measure === CAUSAL, measuredHere = 0;
    var head = el("tr");
    ["neighbour", "top tokens", causalView ? "drop" : st.measure].concat(cv && !causalView ? ["causal drop"] : [])
      .concat(causalView ? ["chosen by"] : []).forEach(function (h) { head.appendChild(el("th", {}, h)); });
    table.appendChild(head);
    vis.edges.forEach(function (e) {
      if (ea[e] !== n && eb[e] !== n) return;
      var m = ea[e] === n ? eb[e] : ea[e], tr = el("tr"), td = el("td");
      td.appendChild(el("a", { href: link(m) }, (layer[m] < layer[n] ? "\u2191 " : "\u2193 ") + label(m)));
      tr.appendChild(td); tr.appendChild(el("td", {}, words(m)));
      tr.appendChild(el("td", {}, v2[e].toFixed(3)));
      var measured = cv && !isNaN(cv[e]);
      if (measured) measuredHere++;
      if (cv && !causalView) tr.appendChild(el("td", { title: measured ? "chosen by " + chosenBy(e) : "not measured" }, measured ? cv[e].toFixed(2) : "\u2013"));
      if (causalView) tr.appendChild(el("td", { "class": "methods" }, chosenBy(e)));
      table.appendChild(tr);
    });
    p.appendChild(el("p", {}, "neighbours shown (" + measureName(st.measure) + "):")); p.appendChild(table);
    if (causalView) p.appendChild(el("p", { "class": "hint" }, "drop: mean relative drop of the downstream feature over its firing tokens (in its strongest examples) when the upstream one is ablated; 1 silences it, below 0 it grows. Measured only for each matching method's top-1 upstream partner of sampled downstream features (chosen by)."));
    else if (cv) p.appendChild(el("p", { "class": "hint" }, measuredHere + " of these edges have a measured causal drop (ablation)."));
  }

  function start() {
    if (!G) { document.body.textContent = "The browser's data (browser/data/graph.js) did not load."; return; }
    index(); fillMenus();
    var q = readHash();
    setMeasure(G.measures.indexOf(q.measure) >= 0 ? q.measure : "pearson");
    $("measure").value = st.measure;
    setThreshold(q.threshold !== undefined ? q.threshold : DEFAULTS[st.measure]);
    var view = q.view || defaultView();
    if (view === "hood" && !(q.site && setHood(q.site, q.feature || 0, q.k || 2))) view = defaultView();
    if (!Array.prototype.some.call($("view").options, function (o) { return o.value === view; })) view = defaultView();
    st.token = q.token !== undefined ? +q.token : -1;
    setView(view);
    $("view").addEventListener("change", function () {
      st.token = -1; setView(this.value);
      if (st.view === "hood" && !st.hood) setHood($("hood-site").value, $("hood-feature").value, $("hood-k").value);
      update();
    });
    $("full-view").addEventListener("click", function () {
      st.token = -1; setView(st.view === "all" ? defaultView() : "all"); update();
    });
    $("measure").addEventListener("change", function () { setMeasure(this.value); setThreshold(DEFAULTS[this.value] || 0); update(); });
    $("threshold").addEventListener("input", function () { setThreshold(this.value); update(); });
    $("token").addEventListener("change", function () { st.token = +this.value; update(); });
    $("hood-go").addEventListener("click", function () {
      if (setHood($("hood-site").value, $("hood-feature").value, $("hood-k").value)) { setView("hood"); update(); }
    });
    var c = $("graph");
    c.addEventListener("mousemove", function (evt) {
      var n = nearest(evt);
      if (n !== hovered) { hovered = n; draw(); panel(n); c.style.cursor = n >= 0 ? "pointer" : "crosshair"; }
    });
    c.addEventListener("click", function (evt) { var n = nearest(evt); if (n >= 0) location.href = link(n); });
    window.addEventListener("resize", function () { if (vis) draw(); });
    update();
  }

  /* for tests and scripts: set state, redraw, return the milliseconds it took */
  function set(o) {
    if (o.measure) { setMeasure(o.measure); $("measure").value = o.measure; if (o.threshold === undefined) setThreshold(DEFAULTS[o.measure]); }
    if (o.threshold !== undefined) setThreshold(o.threshold);
    if (o.hood) setHood(o.hood.site, o.hood.feature, o.hood.k || 2);
    if (o.view) setView(o.view);
    if (o.token !== undefined) { st.token = o.token; $("token").value = o.token; }
    return update();
  }
  function info() {
    var cv = hasCausal() ? evals[CAUSAL] : null, measured = 0;
    if (cv) vis.edges.forEach(function (e) { if (!isNaN(cv[e])) measured++; });
    return { nodes: vis.nodes.length, edges: vis.edges.length, ms: lastMs, view: st.view, measure: st.measure,
             default_view: defaultView(), view_name: $("view-name").textContent,
             threshold: st.threshold, total_nodes: N, total_edges: E, measured_shown: measured,
             causal_offered: hasCausal(), causal_note: causalInfo().note };
  }
  function screenPosition(n) { var g = canvasGeometry(), r = g.c.getBoundingClientRect(); return [r.left + px(n, g), r.top + py(n, g)]; }
  function nodeAt(site, f) { return ids[site + ":" + f]; }
  return { register: register, start: start, set: set, info: info, screenPosition: screenPosition, nodeAt: nodeAt,
           visibleNodes: function () { return vis.nodes.slice(); },
           site: function (n) { return siteOf(n); }, feature: function (n) { return feature[n]; } };
})();

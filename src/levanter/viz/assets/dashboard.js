// The live dashboard: polls the run's API (src/levanter/viz/dashboard.h) and draws each metric as an inline SVG
// plot, updated in place. No libraries, no network beyond this server.
//
// DOM contract (tests/browser/test_dashboard.cpp): each plot is an svg.plot with data-metric (the metric's name)
// and data-count (points drawn), holding one polyline with one "x,y" pair per logged point; #status shows the run
// id, the last step and whether the run is live; #run and #config hold the run record and the resolved config;
// #token-view holds the token-probability view (window.LevanterTokenView, when the page includes it).
(function () {
  "use strict";
  var POLL_MS = 1000;
  var MAIN = ["train/loss", "train/learning_rate", "train/grad_norm", "throughput/tokens_per_second", "throughput/mfu"];
  var W = 440, H = 220, L = 58, R = 12, T = 10, B = 26;  // viewBox and margins

  var state = { file: null, rows: 0, series: {}, completed: null, plots: {}, numSteps: null, run: null,
                malformed: 0, tokenText: null, tokenView: null };

  function el(tag, attrs, parent) {
    var svg = ["svg", "polyline", "line", "text", "g", "rect", "circle"].indexOf(tag) >= 0;
    var e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function fmt(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
    if (a >= 1e4) return (v / 1e3).toPrecision(3) + "k";
    if (a < 1e-3) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }

  // Round tick positions covering [lo, hi] (linear), or the powers of ten inside it (log).
  function ticks(lo, hi, log) {
    var out = [];
    if (log) {
      for (var p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
        var v = Math.pow(10, p);
        if (v >= lo && v <= hi) out.push(v);
      }
      if (out.length >= 2) return out;
      return ticks(lo, hi, false);
    }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4)));
    var err = (hi - lo) / 4 / step;
    step *= err >= 5 ? 5 : err >= 2 ? 2 : 1;
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  function range(a) {
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < a.length; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i]; }
    return [lo, hi];
  }

  function isMain(name) { return MAIN.indexOf(name) >= 0 || /^eval\/(.+\/)?(loss|bpb)$/.test(name); }

  function Plot(name, container) {
    this.name = name;
    this.log = false;
    var card = el("div", { "class": "card" }, container);
    var h = el("h3", {}, card);
    h.appendChild(document.createTextNode(name));
    this.last = el("span", {}, h);
    if (/loss$/.test(name)) {
      var lab = el("label", {}, h), box = el("input", { type: "checkbox" }, lab);
      lab.appendChild(document.createTextNode(" log"));
      box.addEventListener("change", function () { this.log = box.checked; this.draw(); }.bind(this));
    }
    this.svg = el("svg", { "class": "plot", viewBox: "0 0 " + W + " " + H, "data-metric": name, "data-count": "0" }, card);
    this.axes = el("g", { "class": "axis" }, this.svg);
    el("rect", { "class": "frame", x: L, y: T, width: W - L - R, height: H - T - B }, this.svg);
    this.line = el("polyline", { points: "", "class": /^eval\//.test(name) ? "eval" : "" }, this.svg);
    this.marks = el("g", { "class": "marks" }, this.svg);  // a dot per point while there are few (evaluations)
    this.hover = el("g", { "class": "hover", visibility: "hidden" }, this.svg);
    this.dot = el("circle", { r: 3 }, this.hover);
    this.label = el("text", {}, this.hover);
    this.svg.addEventListener("mousemove", this.onHover.bind(this));
    this.svg.addEventListener("mouseleave", function () { this.hover.setAttribute("visibility", "hidden"); }.bind(this));
  }

  Plot.prototype.draw = function () {
    var s = state.series[this.name], xs = s.steps, ys = s.values, n = xs.length;
    var log = this.log && ys.every(function (v) { return v > 0; });
    var f = log ? Math.log10 : function (v) { return v; };
    var rx = range(xs), ry = range(ys), x0 = rx[0], x1 = rx[1], y0 = ry[0], y1 = ry[1];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { var d = Math.abs(y0) * 0.05 || 1; y0 = log ? y0 / 1.1 : y0 - d; y1 = log ? y1 * 1.1 : y1 + d; }
    var fy0 = f(y0), fy1 = f(y1);
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (y) { return T + (fy1 - f(y)) / (fy1 - fy0) * (H - T - B); };
    var pts = new Array(n);
    for (var i = 0; i < n; i++) pts[i] = sx(xs[i]).toFixed(1) + "," + sy(ys[i]).toFixed(1);
    this.line.setAttribute("points", pts.join(" "));
    while (this.marks.firstChild) this.marks.removeChild(this.marks.firstChild);
    for (i = 0; n <= 60 && i < n; i++) el("circle", { cx: sx(xs[i]), cy: sy(ys[i]), r: 2.5 }, this.marks);
    this.svg.setAttribute("data-count", String(n));
    this.svg.setAttribute("data-min", String(ry[0]));
    this.svg.setAttribute("data-max", String(ry[1]));
    this.last.textContent = fmt(ys[n - 1]) + " @ " + xs[n - 1];
    this.map = { sx: sx, sy: sy };
    while (this.axes.firstChild) this.axes.removeChild(this.axes.firstChild);
    ticks(y0, y1, log).forEach(function (t) {
      var y = sy(t);
      el("line", { x1: L, x2: W - R, y1: y, y2: y }, this.axes);
      el("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, this.axes).textContent = fmt(t);
    }, this);
    ticks(x0, x1, false).filter(function (t) { return t === Math.round(t); }).forEach(function (t) {
      var x = sx(t);
      el("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4 }, this.axes);
      el("text", { x: x, y: H - B + 15, "text-anchor": "middle" }, this.axes).textContent = fmt(t);
    }, this);
  };

  // The logged point nearest the mouse (by step): its step and value.
  Plot.prototype.onHover = function (ev) {
    var s = state.series[this.name];
    if (!this.map || !s) return;
    var m = this.svg.getScreenCTM();
    if (!m) return;
    var x = (ev.clientX - m.e) / m.a, best = 0;
    for (var i = 1; i < s.steps.length; i++) {
      if (Math.abs(this.map.sx(s.steps[i]) - x) < Math.abs(this.map.sx(s.steps[best]) - x)) best = i;
    }
    var px = this.map.sx(s.steps[best]), py = this.map.sy(s.values[best]);
    this.dot.setAttribute("cx", px);
    this.dot.setAttribute("cy", py);
    this.label.setAttribute("x", Math.min(px + 6, W - 110));
    this.label.setAttribute("y", Math.max(py - 6, T + 10));
    this.label.textContent = "step " + s.steps[best] + ": " + fmt(s.values[best]);
    this.hover.setAttribute("visibility", "visible");
  };

  function addRow(row) {
    var step = row.step, done = step;
    for (var k in row) {
      // train/ and throughput/ rows describe step `step` (0-based); evaluations the state after `step` steps.
      if (/^(train|throughput)\//.test(k)) done = step + 1;
    }
    if (state.completed === null || done > state.completed) state.completed = done;
    for (k in row) {
      var v = row[k];
      if (k === "step" || typeof v !== "number" || !isFinite(v)) continue;
      var s = state.series[k] || (state.series[k] = { steps: [], values: [], dirty: true });
      s.steps.push(step);
      s.values.push(v);
      s.dirty = true;
    }
  }

  function render() {
    var names = Object.keys(state.series);
    var rank = function (n) { var i = MAIN.indexOf(n); return i >= 0 ? i : MAIN.length; };
    names.sort(function (a, b) { return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0); });
    names.forEach(function (name) {
      var s = state.series[name];
      if (!state.plots[name]) {
        // Created in sorted order; a metric appearing later (an evaluation) goes after those already shown.
        state.plots[name] = new Plot(name, document.getElementById(isMain(name) ? "plots" : "more-plots"));
      }
      if (s.dirty) { state.plots[name].draw(); s.dirty = false; }
    });
  }

  function reset() {
    state.series = {};
    state.completed = null;
    state.rows = 0;
    ["plots", "more-plots"].forEach(function (id) { document.getElementById(id).textContent = ""; });
    state.plots = {};
  }

  function notice(text) {
    var n = document.getElementById("notice");
    n.hidden = !text;
    n.textContent = text || "";
  }

  function hasJsonTracker(run) {
    var t = run && run.tracker;
    if (!t) return null;
    return [].concat(t).some(function (x) { return x.type === "json" || x.type === "json_logger"; });
  }

  function showStatus(m) {
    var st = document.getElementById("status"), parts = [];
    var id = (state.run && state.run.run_id) || "run";
    parts.push(id);
    if (state.completed !== null) parts.push("step " + state.completed + (state.numSteps ? " of " + state.numSteps : ""));
    var kind;
    if (!m) kind = "offline";
    else if (m.live === true || (m.live === null && m.now - m.modified < 30)) kind = "live";
    else kind = state.numSteps && state.completed !== null && state.completed >= state.numSteps ? "finished" : "stopped";
    parts.push({ live: "live, updating", finished: "finished", stopped: "not running", offline: "dashboard unreachable" }[kind]);
    if (state.malformed) parts.push(state.malformed + " malformed line" + (state.malformed > 1 ? "s" : "") + " skipped");
    st.textContent = parts.join(" · ");
    st.setAttribute("data-state", kind);
    st.setAttribute("data-step", state.completed === null ? "" : String(state.completed));
  }

  function getJson(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error(url + ": " + r.status + " " + t); });
      return r.json();
    });
  }

  function pollMetrics() {
    var url = "/api/metrics?since=" + state.rows + (state.file ? "&file=" + encodeURIComponent(state.file) : "");
    getJson(url).then(function (m) {
      if (m.reset) reset();
      state.file = m.file;
      state.malformed = m.malformed;
      m.rows.forEach(addRow);
      state.rows = m.since + m.rows.length;
      render();
      if (!m.exists) {
        notice(hasJsonTracker(state.run) === false
          ? "This run has no json tracker, so it writes no metrics.jsonl and there is nothing to plot. " +
            "Add `- type: json` to trainer.tracker to see its metrics here."
          : "No metrics.jsonl in the run directory yet: waiting for the first step.");
      } else {
        notice("");
      }
      showStatus(m);
    }).catch(function () { showStatus(null); }).then(function () { setTimeout(pollMetrics, POLL_MS); });
  }

  function pollRunAndConfig() {
    getJson("/api/run").then(function (run) {
      var pre = document.getElementById("run");
      if (run === null) return;
      state.run = run;
      pre.textContent = JSON.stringify(run, null, 2);
      pre.className = "";
    }).catch(function () {});
    getJson("/api/config").then(function (c) {
      var pre = document.getElementById("config");
      if (c === null) return;
      pre.textContent = c.text;
      pre.className = "";
      var m = /(^|\n)\s*num_train_steps:\s*(\d+)/.exec(c.text);
      if (m) state.numSteps = Number(m[2]);
    }).catch(function () {});
    setTimeout(pollRunAndConfig, state.run ? 10000 : 2000);
  }

  function pollTokenProbs() {
    fetch("/api/token_probs", { cache: "no-store" }).then(function (r) { return r.ok ? r.text() : null; }).then(function (text) {
      if (text === null || text === state.tokenText) return;
      state.tokenText = text;
      var data = JSON.parse(text), box = document.getElementById("token-view");
      if (data === null) return;
      if (!window.LevanterTokenView) {
        box.innerHTML = '<p class="empty">This build of the page has no token-probability view.</p>';
        return;
      }
      if (state.tokenView && state.tokenView.update) {
        state.tokenView.update(data);
      } else {
        box.textContent = "";
        state.tokenView = window.LevanterTokenView.render(box, data);
      }
    }).catch(function () {}).then(function () { setTimeout(pollTokenProbs, 5000); });
  }

  pollRunAndConfig();
  pollMetrics();
  pollTokenProbs();
})();

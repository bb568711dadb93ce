// The token-probability view (docs/visualization.md): each token of some documents coloured by the probability a
// model gave it, on matplotlib's viridis scale (dark purple: improbable, yellow: probable), with a slider over the
// steps it was scored at, and a comparison of two checkpoints on a diverging scale. No libraries; the page that
// `levanter viz` writes and the live dashboard both call
//
//   const view = LevanterTokenView.render(container, data);   // data: viz::page_data (token_probs.h)
//   view.update(newData);                                      // e.g. a new step arrived
//   LevanterTokenView.viridis(p)                               // "rgb(r,g,b)"
//
// DOM contract (tests/browser/test_token_view.cpp and the dashboard rely on it): one span.tok per token with
// data-doc, data-pos and data-p (empty at position 0, which has no prediction), its background viridis(p);
// input.step-slider, button.play, .doc-loss per document, div.ltv-tooltip, .legend; in comparison mode
// button.mode-diff / .mode-a / .mode-b.
(function () {
  "use strict";

  // matplotlib's viridis (_cm_listed.py, _viridis_data: 256 entries, CC0), each entry rounded to 8 bits as
  // matplotlib.colors.to_hex does: 256 x RRGGBB.
  const VIRIDIS =
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769" +
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a" +
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85" +
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b" +
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d" +
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e" +
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e" +
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d" +
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88" +
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81" +
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74" +
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863" +
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d" +
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32" +
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a" +
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725" +
    "";

  function clamp01(p) {
    return p > 1 ? 1 : p >= 0 ? p : 0;  // NaN -> 0
  }

  // As matplotlib's Colormap.__call__ on a float: index floor(p * 256), the last entry for p = 1.
  function viridisRgb(p) {
    const i = Math.min(255, Math.floor(clamp01(p) * 256));
    const h = VIRIDIS.substr(i * 6, 6);
    return [parseInt(h.substr(0, 2), 16), parseInt(h.substr(2, 2), 16), parseInt(h.substr(4, 2), 16)];
  }

  function css(rgb) {
    return "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")";
  }

  function viridis(p) {
    return css(viridisRgb(p));
  }

  // log p_B - log p_A on a diverging scale: red where B gives the token less probability, blue more, white
  // equal; saturated at a factor of DIFF_RANGE.
  const DIFF_RANGE = 100;
  const RED = [178, 24, 43], WHITE = [247, 247, 247], BLUE = [33, 102, 172];
  function diverging(d) {
    const t = Math.max(-1, Math.min(1, d / Math.log(DIFF_RANGE))) || 0;
    const to = t < 0 ? RED : BLUE, a = Math.abs(t);
    return [0, 1, 2].map((k) => Math.round(WHITE[k] + (to[k] - WHITE[k]) * a));
  }

  // Black text on light cells, white on dark ones.
  function textOn(rgb) {
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 140 ? "#000" : "#fff";
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtP(p) {
    if (p === undefined || p === null) return "–";
    if (p === 0) return "0";
    return p >= 0.001 ? p.toFixed(4) : p.toExponential(2);
  }

  // A newline shows as a visible ↵ followed by the real line break.
  function shown(piece) {
    return piece.replace(/\n/g, "↵\n");
  }

  // A piece as the tooltip shows it: visible spaces and line breaks.
  function quoted(piece) {
    return "\u201c" + piece.replace(/\n/g, "↵").replace(/\t/g, "⇥") + "\u201d";
  }

  function render(container, data) {
    const root = el("div", "ltv");
    container.replaceChildren(root);
    const state = { data: null, series: 0, mode: "diff", playing: null };

    const head = el("div", "ltv-head");
    const title = el("h1", "ltv-title");
    const source = el("div", "ltv-source");
    head.append(title, source);

    const controls = el("div", "ltv-controls");
    const play = el("button", "play", "▶");
    play.type = "button";
    play.title = "Play through the steps";
    const slider = el("input", "step-slider");
    slider.type = "range";
    slider.min = "0";
    slider.step = "1";
    slider.setAttribute("aria-label", "step");
    const stepLabel = el("span", "step-label");
    const modes = el("span", "modes");
    const modeButtons = {};
    for (const [m, label] of [["diff", "B vs A"], ["a", "A alone"], ["b", "B alone"]]) {
      const b = el("button", "mode-" + m, label);
      b.type = "button";
      b.addEventListener("click", () => {
        state.mode = m;
        paint();
      });
      modeButtons[m] = b;
      modes.append(b);
    }
    controls.append(play, slider, stepLabel, modes);

    const legend = el("div", "legend");
    const docsBox = el("div", "ltv-docs");
    const tooltip = el("div", "ltv-tooltip");
    tooltip.setAttribute("role", "tooltip");
    tooltip.hidden = true;
    root.append(head, controls, legend, docsBox, tooltip);

    const compare = () => state.data && state.data.compare;
    const seriesDoc = (s, d) => {
      const ser = state.data.series[s];
      return ser && ser.docs ? ser.docs[d] : undefined;
    };
    const pAt = (s, d, pos) => {
      const sd = seriesDoc(s, d);
      return sd && pos > 0 ? sd.p[pos - 1] : undefined;
    };

    function buildLegend() {
      legend.replaceChildren();
      const bar = el("div", "legend-bar");
      const labels = el("div", "legend-labels");
      const stops = [];
      if (compare() && state.mode === "diff") {
        for (let i = 0; i <= 20; ++i) stops.push(css(diverging((i / 10 - 1) * Math.log(DIFF_RANGE))));
        labels.append(el("span", "", "B: ×1/" + DIFF_RANGE), el("span", "", "same"), el("span", "", "B: ×" + DIFF_RANGE));
        legend.title = "log p_B − log p_A of each token";
      } else {
        for (let i = 0; i <= 32; ++i) stops.push(viridis(i / 32));
        labels.append(el("span", "", "p = 0"), el("span", "", "0.5"), el("span", "", "1"));
        legend.title = "probability of each token given the text before it";
      }
      bar.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
      const first = el("span", "legend-first", "first token: no prediction");
      legend.append(bar, labels, first);
    }

    function buildDocs() {
      docsBox.replaceChildren();
      state.data.docs.forEach((doc, d) => {
        const sec = el("section", "doc");
        sec.dataset.doc = String(d);
        const h = el("h2", "doc-head");
        h.append(el("span", "doc-name", doc.name || "document " + d), el("span", "doc-loss"));
        const text = el("div", "doc-text");
        const partial = new Set(doc.partial || []);
        doc.pieces.forEach((piece, pos) => {
          const t = el("span", "tok", shown(piece));
          if (pos === 0) t.classList.add("first");
          if (partial.has(pos)) t.classList.add("partial");
          if (piece.indexOf("\n") >= 0) t.classList.add("newline");
          t.dataset.doc = String(d);
          t.dataset.pos = String(pos);
          t.tabIndex = 0;
          text.append(t);
        });
        sec.append(h, text);
        docsBox.append(sec);
      });
    }

    function paint() {
      const cmp = compare();
      const s = state.series;
      controls.classList.toggle("comparing", !!cmp);
      slider.hidden = play.hidden = !!cmp || state.data.series.length < 2;
      modes.hidden = !cmp;
      for (const m in modeButtons) modeButtons[m].classList.toggle("active", state.mode === m);
      const ser = state.data.series[s];
      if (cmp) {
        const a = state.data.series[cmp.a], b = state.data.series[cmp.b];
        stepLabel.textContent = "A: " + (a ? a.label : "?") + " · B: " + (b ? b.label : "?");
      } else {
        stepLabel.textContent = ser ? ser.label : "not scored yet";
      }
      buildLegend();
      docsBox.querySelectorAll("section.doc").forEach((sec) => {
        const d = Number(sec.dataset.doc);
        const loss = sec.querySelector(".doc-loss");
        if (cmp) {
          const la = seriesDoc(cmp.a, d), lb = seriesDoc(cmp.b, d);
          loss.textContent = "loss A " + (la ? la.loss.toFixed(3) : "–") + " · B " + (lb ? lb.loss.toFixed(3) : "–");
        } else {
          const sd = seriesDoc(s, d);
          loss.textContent = sd ? "loss " + sd.loss.toFixed(3) + " nats" : "";
        }
      });
      docsBox.querySelectorAll("span.tok").forEach((t) => {
        const d = Number(t.dataset.doc), pos = Number(t.dataset.pos);
        let rgb = null, p;
        if (pos > 0) {
          if (cmp) {
            const pa = pAt(cmp.a, d, pos), pb = pAt(cmp.b, d, pos);
            if (state.mode === "a") {
              p = pa;
              if (p !== undefined) rgb = viridisRgb(p);
            } else if (state.mode === "b") {
              p = pb;
              if (p !== undefined) rgb = viridisRgb(p);
            } else if (pa !== undefined && pb !== undefined) {
              p = pb;
              const diff = Math.log(pb) - Math.log(pa);
              t.dataset.diff = String(diff);
              rgb = diverging(isFinite(diff) ? diff : pb > pa ? Infinity : pb < pa ? -Infinity : 0);
            }
          } else {
            p = pAt(s, d, pos);
            if (p !== undefined) rgb = viridisRgb(p);
          }
        }
        t.dataset.p = p === undefined ? "" : String(p);
        t.style.backgroundColor = rgb ? css(rgb) : "";
        t.style.color = rgb ? textOn(rgb) : "";
      });
      if (state.shownFor) showTooltip(state.shownFor);
    }

    function tooltipRow(cls, text) {
      return el("div", cls, text);
    }

    function alternatives(sd, pos) {
      const box = el("ol", "tip-top");
      const top = sd && sd.top ? sd.top[pos - 1] || [] : [];
      for (const [piece, p] of top) {
        const li = el("li");
        li.append(el("span", "tip-piece", quoted(piece)), el("span", "tip-p", fmtP(p)));
        box.append(li);
      }
      return box;
    }

    function showTooltip(t) {
      state.shownFor = t;
      const d = Number(t.dataset.doc), pos = Number(t.dataset.pos);
      const doc = state.data.docs[d];
      tooltip.replaceChildren();
      tooltip.append(tooltipRow("tip-token", quoted(doc.pieces[pos])));
      if (t.classList.contains("partial")) {
        tooltip.append(tooltipRow("tip-note", "part of a character (UTF-8 bytes)"));
      }
      if (pos === 0) {
        tooltip.append(tooltipRow("tip-note", "first token: nothing predicts it"));
      } else {
        const cmp = compare();
        const rows = cmp ? [["A", cmp.a], ["B", cmp.b]] : [["", state.series]];
        for (const [name, s] of rows) {
          const sd = seriesDoc(s, d);
          if (!sd) continue;
          const label = (name ? name + " (" + state.data.series[s].label + "): " : "");
          tooltip.append(tooltipRow("tip-p-rank", label + "p = " + fmtP(sd.p[pos - 1]) + ", rank " + sd.rank[pos - 1]));
          if (sd.top && sd.top[pos - 1] && sd.top[pos - 1].length) {
            tooltip.append(tooltipRow("tip-top-head", (name ? name + ": " : "") + "most probable next tokens"));
            tooltip.append(alternatives(sd, pos));
          }
        }
        if (cmp && t.dataset.diff !== undefined) {
          const diff = Number(t.dataset.diff);
          tooltip.append(tooltipRow("tip-diff", "log p_B − log p_A = " + (isFinite(diff) ? diff.toFixed(3) : String(diff))));
        }
      }
      tooltip.hidden = false;
      const r = t.getBoundingClientRect(), rr = root.getBoundingClientRect();
      tooltip.style.left = Math.max(0, r.left - rr.left) + "px";
      tooltip.style.top = r.bottom - rr.top + 4 + "px";
    }

    function hideTooltip() {
      state.shownFor = null;
      tooltip.hidden = true;
    }

    const tokOf = (e) => (e.target && e.target.closest ? e.target.closest("span.tok") : null);
    docsBox.addEventListener("mouseover", (e) => {
      const t = tokOf(e);
      if (t) showTooltip(t);
    });
    docsBox.addEventListener("focusin", (e) => {
      const t = tokOf(e);
      if (t) showTooltip(t);
    });
    docsBox.addEventListener("click", (e) => {
      const t = tokOf(e);
      if (t) showTooltip(t);
    });
    docsBox.addEventListener("mouseleave", hideTooltip);
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape") hideTooltip();
    });

    slider.addEventListener("input", () => {
      state.series = Number(slider.value);
      paint();
    });
    function stopPlaying() {
      if (state.playing) clearInterval(state.playing);
      state.playing = null;
      play.textContent = "▶";
    }
    play.addEventListener("click", () => {
      if (state.playing) return stopPlaying();
      const n = state.data.series.length;
      if (state.series >= n - 1) state.series = 0;
      play.textContent = "❚❚";
      state.playing = setInterval(() => {
        if (state.series >= state.data.series.length - 1) return stopPlaying();
        state.series += 1;
        slider.value = String(state.series);
        paint();
      }, 700);
      slider.value = String(state.series);
      paint();
    });

    function update(newData) {
      const old = state.data;
      const atEnd = !old || state.series >= old.series.length - 1;
      const sameDocs = old && JSON.stringify(old.docs) === JSON.stringify(newData.docs);
      state.data = newData;
      title.textContent = newData.title || "Token probabilities";
      source.textContent = newData.source ? "validation set: " + newData.source : "";
      const n = newData.series.length;
      slider.max = String(Math.max(0, n - 1));
      // Follow the newest step unless the reader moved the slider back.
      state.series = atEnd ? Math.max(0, n - 1) : Math.min(state.series, Math.max(0, n - 1));
      slider.value = String(state.series);
      if (!sameDocs) {
        hideTooltip();
        buildDocs();
      }
      paint();
    }

    update(data);
    return { update: update, root: root };
  }

  window.LevanterTokenView = { render: render, viridis: viridis, diverging: (d) => css(diverging(d)) };
})();

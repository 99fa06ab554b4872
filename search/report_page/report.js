/* einnas report.html: draws the history and the Pareto front from #einnas-data (plain SVG).
   Study data is written only as text (textContent / attributes), never parsed as markup. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("einnas-data").textContent);
  var tip = document.getElementById("tip");
  var W = 1000, H = 360, M = {l: 64, r: 16, t: 12, b: 44};
  var byTrial = {};
  data.points.forEach(function (p) { byTrial[p.trial] = p; });

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmt(v, name) {
    if (v === null || v === undefined) return "-";
    if (name === "accuracy") return (100 * v).toFixed(1) + "%";
    if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en");
    return String(Number(v.toPrecision(3)));
  }
  function scale(lo, hi, a, b, log, integer) {
    if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    var f = function (v) { var x = log ? Math.log10(v) : v; return a + (x - lo) / (hi - lo) * (b - a); };
    f.ticks = function () {
      var out = [], step, t;
      if (log) {
        for (t = Math.floor(lo); t <= Math.ceil(hi); t++) if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(Math.pow(10, t));
        return out.length >= 2 ? out : [Math.pow(10, lo), Math.pow(10, hi)];
      }
      var raw = (hi - lo) / 6, mag = Math.pow(10, Math.floor(Math.log10(raw)));
      step = [1, 2, 2.5, 5, 10].map(function (s) { return s * mag; }).filter(function (s) { return s >= raw; })[0];
      if (integer) step = Math.max(1, Math.round(step));
      for (t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
      return out;
    };
    return f;
  }
  function domain(values, name) {
    var v = values.filter(function (x) { return x !== null && isFinite(x); });
    if (name === "accuracy") return {lo: 0, hi: 1, log: false};
    if (!v.length) return {lo: 0, hi: 1, log: false};
    var lo = Math.min.apply(null, v), hi = Math.max.apply(null, v);
    var log = lo > 0 && hi / lo > 100;
    if (log) return {lo: lo / 1.3, hi: hi * 1.3, log: true};
    var pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.1 || 1;
    return {lo: lo - pad, hi: hi + pad, log: false};
  }
  function frame(box, xs, ys, xlabel, ylabel, xname, yname) {
    box.textContent = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, role: "img"}, box);
    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    xs.ticks().forEach(function (t) {
      var x = xs(t);
      el("line", {x1: x, x2: x, y1: M.t, y2: H - M.b}, grid);
      el("text", {x: x, y: H - M.b + 16, "text-anchor": "middle"}, axis).textContent = fmt(t, xname);
    });
    ys.ticks().forEach(function (t) {
      var y = ys(t);
      el("line", {x1: M.l, x2: W - M.r, y1: y, y2: y}, grid);
      el("text", {x: M.l - 6, y: y + 4, "text-anchor": "end"}, axis).textContent = fmt(t, yname);
    });
    el("path", {d: "M" + M.l + "," + M.t + "V" + (H - M.b) + "H" + (W - M.r), fill: "none"}, axis);
    el("text", {x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle"}, axis).textContent = xlabel;
    el("text", {x: 14, y: (M.t + H - M.b) / 2, "text-anchor": "middle",
                transform: "rotate(-90 14 " + (M.t + H - M.b) / 2 + ")"}, axis).textContent = ylabel;
    return svg;
  }
  function empty(box, text) {
    box.textContent = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " 80", role: "img"}, box);
    el("text", {x: W / 2, y: 44, "text-anchor": "middle", "class": "empty"}, svg).textContent = text;
  }
  function showTip(evt, lines, arch) {
    tip.textContent = "";
    lines.forEach(function (line) { var d = document.createElement("div"); d.textContent = line; tip.appendChild(d); });
    if (arch) { var c = document.createElement("code"); c.textContent = arch; tip.appendChild(c); }
    tip.hidden = false;
    var x = evt.clientX + 14, y = evt.clientY + 14, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = Math.max(8, evt.clientX - r.width - 14);
    if (y + r.height > window.innerHeight - 8) y = Math.max(8, evt.clientY - r.height - 14);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hover(node, lines, arch) {
    node.addEventListener("mouseenter", function (evt) { showTip(evt, lines, arch); });
    node.addEventListener("mousemove", function (evt) { showTip(evt, lines, arch); });
    node.addEventListener("mouseleave", function () { tip.hidden = true; });
  }
  function valueLines(p) {
    return data.objectives.map(function (o, i) { return o.label + ": " + fmt(p.values[i], o.name); });
  }

  function drawHistory() {
    var box = document.getElementById("history"), h = data.history, o = data.objectives[h.objective];
    if (!h.points.length) { empty(box, "no evaluated trial yet"); return; }
    var trials = h.points.map(function (p) { return p.trial; });
    var lo = Math.min.apply(null, trials), hi = Math.max.apply(null, trials);
    var d = domain(h.points.map(function (p) { return p.value; }), o.name);
    var xs = scale(lo - 0.5, hi + 0.5, M.l + 6, W - M.r - 6, false, true), ys = scale(d.lo, d.hi, H - M.b - 6, M.t + 4, d.log);
    var svg = frame(box, xs, ys, "trial number", o.label, "", o.name);
    if (h.best.length) {
      var path = "";
      h.best.forEach(function (b, i) {
        path += (i ? "H" + xs(b[0]) + "V" : "M" + xs(b[0]) + ",") + ys(b[1]);
      });
      path += "H" + xs(hi + 0.5);
      el("path", {d: path, "class": "best"}, svg);
    }
    var g = el("g", {}, svg), bottom = H - M.b - 6;
    h.points.forEach(function (p) {
      var x = xs(p.trial), node, lines = ["trial " + p.trial + " · " + (p.archid || "?"), "status: " + p.status];
      if (p.status === "failed" || p.value === null) {
        node = el("path", {d: "M" + (x - 4) + "," + (bottom - 4) + "l8,8m0,-8l-8,8", "class": "pt failed"}, g);
        if (p.reason) lines.push("reason: " + p.reason);
      } else {
        node = el("circle", {cx: x, cy: ys(p.value), r: 4, "class": "pt " + p.status + (p.feasible ? "" : " infeasible")}, g);
        if (!p.feasible) lines.push("over the budget (a constraint is violated)");
        lines.push(o.label + (p.status === "pruned" ? " at its rung: " : ": ") + fmt(p.value, o.name));
      }
      node.setAttribute("data-trial", p.trial);
      node.setAttribute("data-status", p.status);
      var full = byTrial[p.trial];
      if (full && data.objectives.length > 1) lines = lines.concat(valueLines(full).slice(1));
      hover(node, lines, full ? full.arch : null);
    });
  }

  function drawPareto() {
    var box = document.getElementById("pareto");
    if (!box) return;
    var sx = document.getElementById("pareto-x"), sy = document.getElementById("pareto-y");
    data.objectives.forEach(function (o, i) {
      [sx, sy].forEach(function (s) { var opt = document.createElement("option"); opt.value = i; opt.textContent = o.label; s.appendChild(opt); });
    });
    var other = data.objectives.findIndex(function (o, i) { return i !== data.main; });
    sx.value = String(other < 0 ? 0 : other); sy.value = String(data.main);
    function draw() {
      var xi = Number(sx.value), yi = Number(sy.value), ox = data.objectives[xi], oy = data.objectives[yi];
      if (!data.points.length) { empty(box, "no completed trial yet"); return; }
      var dx = domain(data.points.map(function (p) { return p.values[xi]; }), ox.name);
      var dy = domain(data.points.map(function (p) { return p.values[yi]; }), oy.name);
      var xs = scale(dx.lo, dx.hi, M.l + 6, W - M.r - 6, dx.log), ys = scale(dy.lo, dy.hi, H - M.b - 6, M.t + 4, dy.log);
      var svg = frame(box, xs, ys, ox.label + " (" + ox.direction + ")", oy.label + " (" + oy.direction + ")", ox.name, oy.name);
      var front = data.points.filter(function (p) { return p.front; });
      if (data.objectives.length === 2 && front.length > 1) {
        front.sort(function (a, b) { return a.values[xi] - b.values[xi]; });
        var path = "";
        front.forEach(function (p, i) { path += (i ? "L" : "M") + xs(p.values[xi]) + "," + ys(p.values[yi]); });
        el("path", {d: path, "class": "frontline"}, svg);
      }
      var g = el("g", {}, svg);
      // dominated points first, so the front is drawn on top of them
      data.points.filter(function (p) { return !p.front; }).concat(front).forEach(function (p) {
        var node = el("circle", {cx: xs(p.values[xi]), cy: ys(p.values[yi]), r: p.front ? 5 : 3.5,
                                 "class": "pt " + (p.front ? "front" : "dominated") + (p.feasible ? "" : " infeasible")}, g);
        node.setAttribute("data-trial", p.trial);
        node.setAttribute("data-archid", p.archid || "");
        var lines = ["trial " + p.trial + " · " + (p.archid || "?") + (p.front ? " · on the front" : "")];
        lines = lines.concat(valueLines(p));
        if (!p.feasible) lines.push("over the budget (a constraint is violated)");
        if (p.params !== null && data.objectives.every(function (o) { return o.name !== "params"; })) lines.push("parameters: " + fmt(p.params, "params"));
        hover(node, lines, p.arch);
      });
    }
    sx.addEventListener("change", draw); sy.addEventListener("change", draw);
    draw();
  }

  drawHistory();
  drawPareto();
  document.body.setAttribute("data-rendered", "1");
})();

// fusionrec dashboard: charts from the page's embedded JSON, live counters, admin buttons. No framework.
"use strict";
(function () {
  const KEY = "fusionrec-api-key";
  const COLORS = { view: "#4e79a7", click: "#76b7b2", fav: "#b07aa1", cart: "#f28e2b", buy: "#e15759" };
  const PALETTE = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"];
  const color = (name, i) => COLORS[name] || PALETTE[i % PALETTE.length];

  window.fusionrec = {
    authHeaders() {
      const k = sessionStorage.getItem(KEY);
      return k ? { Authorization: "Bearer " + k } : {};
    },
    async send(method, url, body) {
      const headers = Object.assign({ "Content-Type": "application/json" }, this.authHeaders());
      const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      let payload = null;
      try { payload = await r.json(); } catch (e) { payload = null; }
      return { ok: r.ok, status: r.status, body: payload };
    },
  };

  const keyForm = document.getElementById("key-form");
  if (keyForm) {
    keyForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const v = document.getElementById("api-key").value.trim();
      if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY);
      document.getElementById("api-key").value = "";
      keyForm.querySelector("button").textContent = v ? "Key set" : "Use key";
    });
  }

  const dataEl = document.getElementById("page-data");
  const data = dataEl ? JSON.parse(dataEl.textContent) : null;
  if (window.Chart) {
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.color = "#1f2933";
    Chart.defaults.font.family = "system-ui, sans-serif";
  }
  const canvas = (id) => document.getElementById(id);
  const day = (ms) => new Date(ms).toISOString().slice(0, 10);

  function stacked(el, days, series) {
    if (!el || !window.Chart) return;
    new Chart(el, {
      type: "bar",
      data: { labels: days, datasets: Object.keys(series).map((b, i) => ({ label: b, data: series[b], backgroundColor: color(b, i) })) },
      options: { scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true } } },
    });
  }

  function bandDatasets(label, values, ci, c) {
    // the mean as a line, the CI as a filled band between two invisible lines
    return [
      { label: label, data: values, borderColor: c, backgroundColor: c, tension: 0.2 },
      { label: label + " (upper)", data: ci.map((x) => (x ? x[1] : null)), borderColor: "transparent", pointRadius: 0, fill: "+1", backgroundColor: c + "33" },
      { label: label + " (lower)", data: ci.map((x) => (x ? x[0] : null)), borderColor: "transparent", pointRadius: 0, fill: false },
    ];
  }
  const noBands = { labels: { filter: (item) => !/\((upper|lower)\)$/.test(item.text) } };

  const page = document.body.dataset.page;
  if (page === "overview" && data) {
    stacked(canvas("chart-daily"), data.days, data.series);
    const fmt = (x, d) => (x === null || x === undefined ? "-" : Number(x).toFixed(d));
    const poll = async () => {
      try {
        const r = await fetch("/ui/api/live");
        if (r.ok) {
          const s = await r.json();
          document.getElementById("live-epm").textContent = fmt(s.events_per_minute, 1);
          document.getElementById("live-rps").textContent = fmt(s.requests_per_second, 2);
          document.getElementById("live-p99").textContent = fmt(s.p99_ms, 1);
        }
      } catch (e) { /* the server went away: keep the last numbers */ }
    };
    setInterval(poll, 3000);
  }

  if (page === "models" && data) {
    const ev = data.evaluation;
    if (ev && window.Chart) {
      const fam = ev.metric_vs_k.ndcg ? "ndcg" : Object.keys(ev.metric_vs_k)[0];
      if (fam && canvas("chart-k")) {
        const sets = [];
        Object.keys(ev.metric_vs_k[fam]).forEach((m, i) => {
          sets.push(...bandDatasets(m, ev.metric_vs_k[fam][m], ev.ci_vs_k[fam][m], PALETTE[i % PALETTE.length]));
        });
        new Chart(canvas("chart-k"), { type: "line", data: { labels: ev.k.map((k) => "K=" + k), datasets: sets },
          options: { plugins: { legend: noBands }, scales: { y: { title: { display: true, text: fam } } } } });
      }
      if (canvas("chart-tradeoff")) {
        new Chart(canvas("chart-tradeoff"), { type: "scatter",
          data: { datasets: ev.tradeoff.map((p, i) => ({ label: p.model, data: [{ x: p.x, y: p.y }], backgroundColor: PALETTE[i % PALETTE.length], pointRadius: 7 })) },
          options: { scales: { x: { title: { display: true, text: "coverage@" + ev.kmax } }, y: { title: { display: true, text: "ndcg@" + ev.kmax } } } } });
      }
    }
    if (data.importances && data.importances.length && canvas("chart-importance")) {
      new Chart(canvas("chart-importance"), { type: "bar",
        data: { labels: data.importances.map((x) => x[0]), datasets: [{ label: "share of gain", data: data.importances.map((x) => x[1]), backgroundColor: "#4e79a7" }] },
        options: { indexAxis: "y", plugins: { legend: { display: false } } } });
    }
  }

  if (page === "users" && data && data.timeline && canvas("chart-timeline") && window.Chart) {
    const kinds = [...new Set(data.timeline.map((e) => e.b))];
    new Chart(canvas("chart-timeline"), { type: "scatter",
      data: { datasets: kinds.map((b, i) => ({ label: b, backgroundColor: color(b, i),
        data: data.timeline.filter((e) => e.b === b).map((e) => ({ x: e.x, y: kinds.indexOf(b) })) })) },
      options: { scales: { x: { type: "linear", ticks: { callback: (v) => day(v), maxTicksLimit: 8 } },
        y: { min: -0.5, max: kinds.length - 0.5, afterBuildTicks: (axis) => { axis.ticks = kinds.map((_, i) => ({ value: i })); },
          ticks: { callback: (v) => kinds[Math.round(v)] || "" } } } } });
  }

  if (page === "items" && data && canvas("chart-item")) stacked(canvas("chart-item"), data.days, data.series);

  if (page === "experiments" && Array.isArray(data) && window.Chart) {
    const draw = (series, el) => {
      const metric = el.dataset.metric;
      const names = series.length ? Object.keys(series[series.length - 1].variants) : [];
      const sets = [];
      names.forEach((v, i) => {
        const pts = series.map((p) => p.variants[v] || null);
        sets.push(...bandDatasets(v, pts.map((p) => (p ? (metric === "ctr" ? p.ctr : p.conversion_rate) : null)),
          pts.map((p) => (p ? (metric === "ctr" ? p.ctr_ci : p.conversion_ci) : null)), PALETTE[i % PALETTE.length]));
      });
      const labels = series.map((p) => p.t.slice(11, 19));
      const old = Chart.getChart(el);
      if (old) { old.data.labels = labels; old.data.datasets = sets; old.update(); return; }
      new Chart(el, { type: "line", data: { labels: labels, datasets: sets },
        options: { plugins: { legend: noBands }, scales: { y: { beginAtZero: true } } } });
    };
    const all = () => document.querySelectorAll("canvas.exp-chart");
    all().forEach((el) => draw(data[Number(el.dataset.exp)] || [], el));
    setInterval(async () => {  // the course goes on while the page is open
      try {
        const r = await fetch("/ui/api/experiments");
        if (!r.ok) return;
        const reports = await r.json();
        all().forEach((el) => draw((reports[Number(el.dataset.exp)] || {}).series || [], el));
      } catch (e) { /* the server went away: keep the charts */ }
    }, 5000);
  }

  const retrain = document.getElementById("retrain-form");
  if (retrain) {
    retrain.addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = document.getElementById("retrain-out");
      out.textContent = "starting…";
      const r = await window.fusionrec.send("POST", "/admin/retrain");
      out.textContent = r.ok ? "retrain started; the new version serves when it is ready" :
        "refused (" + r.status + "): " + ((r.body && r.body.detail) || "") ;
    });
  }
  const forget = document.getElementById("forget-form");
  if (forget) {
    forget.addEventListener("submit", async (e) => {
      e.preventDefault();
      const user = forget.dataset.user;
      if (!window.confirm("Delete every event and all model state of " + user + "?")) return;
      const out = document.getElementById("forget-out");
      const r = await window.fusionrec.send("DELETE", "/users/" + encodeURIComponent(user));
      out.textContent = r.ok ? "deleted: " + r.body.events_deleted + " events" : "refused (" + r.status + "): " + ((r.body && r.body.detail) || "");
    });
  }
})();

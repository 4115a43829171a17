// dagrs web UI: the little that needs a script. Pages work without it, except live updates.
// Everything inserted as HTML here was rendered (and escaped) by the server.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  liveRun();
  lineage();
  confirmations();
  autoSubmit();
  refresh();
});

// A page of something still going on (an active backfill) reloads itself now and then.
function refresh() {
  var el = document.querySelector("[data-refresh]");
  if (!el) return;
  setTimeout(function () {
    location.reload();
  }, Number(el.dataset.refresh) || 3000);
}

// A run page: its event log, status and timeline follow the run over server-sent events.
function liveRun() {
  var log = document.getElementById("log");
  if (!log || !log.dataset.stream) return;
  var body = log.querySelector("tbody");
  var source = new EventSource(log.dataset.stream);
  source.addEventListener("events", function (e) {
    var wrap = document.querySelector(".log-wrap") || document.scrollingElement;
    var atEnd = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 80;
    body.insertAdjacentHTML("beforeend", e.data);
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    if (atEnd) wrap.scrollTop = wrap.scrollHeight;
  });
  source.addEventListener("status", function (e) {
    var badge = document.getElementById("run-status");
    if (badge) {
      badge.textContent = e.data;
      badge.className = "badge s-" + e.data;
    }
    var final = ["succeeded", "failed", "cancelled"].indexOf(e.data) >= 0;
    document.querySelectorAll("[data-while-active]").forEach(function (el) {
      el.hidden = final;
    });
    document.querySelectorAll("[data-when-ended]").forEach(function (el) {
      el.hidden = !final;
    });
  });
  source.addEventListener("facts", function (e) {
    var facts = document.getElementById("facts");
    if (facts) facts.outerHTML = e.data;
  });
  source.addEventListener("gantt", function (e) {
    var gantt = document.getElementById("gantt");
    if (gantt) gantt.innerHTML = e.data;
  });
  source.addEventListener("end", function () {
    source.close();
    log.dataset.live = "ended";
  });
}

// The lineage graph: pick nodes into the selection box, zoom, live colours.
function lineage() {
  var graph = document.querySelector("svg.graph");
  if (!graph) return;
  var input = document.getElementById("selection");
  var picked = new Set(
    (input && input.value ? input.value.split(/[\s,]+/) : []).filter(Boolean)
  );
  function show() {
    graph.querySelectorAll(".node[data-key]").forEach(function (node) {
      node.classList.toggle("picked", picked.has(node.dataset.key));
    });
    if (input) input.value = Array.from(picked).join(" ");
  }
  graph.addEventListener("click", function (e) {
    var pick = e.target.closest(".pick");
    if (!pick) return;
    e.preventDefault();
    var key = pick.closest(".node").dataset.key;
    if (picked.has(key)) picked.delete(key);
    else picked.add(key);
    show();
  });
  if (input) {
    input.addEventListener("change", function () {
      picked = new Set(input.value.split(/[\s,]+/).filter(Boolean));
      show();
    });
  }
  var zoom = document.getElementById("zoom");
  if (zoom) {
    var width = Number(graph.getAttribute("width"));
    var height = Number(graph.getAttribute("height"));
    var apply = function () {
      graph.setAttribute("width", Math.round(width * zoom.value / 100));
      graph.setAttribute("height", Math.round(height * zoom.value / 100));
    };
    zoom.addEventListener("input", apply);
    apply();
  }
  show();
  var statusUrl = graph.dataset.status;
  if (!statusUrl) return;
  var refresh = function () {
    if (document.hidden) return;
    fetch(statusUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (text) {
        var states = {};
        text.split("\n").forEach(function (line) {
          var i = line.lastIndexOf(" ");
          if (i > 0) states[line.slice(0, i)] = line.slice(i + 1);
        });
        graph.querySelectorAll(".node[data-key]").forEach(function (node) {
          var st = states[node.dataset.key];
          if (!st) return;
          node.classList.remove("st-fresh", "st-stale", "st-never", "st-running");
          node.classList.add("st-" + st);
        });
      })
      .catch(function () {});
  };
  setInterval(refresh, 3000);
}

// Buttons that ask first (cancel a run).
function confirmations() {
  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (e) {
      if (!window.confirm(button.dataset.confirm)) e.preventDefault();
    });
  });
}

// Filter forms that apply as soon as a choice changes.
function autoSubmit() {
  document.querySelectorAll("form[data-auto] select, form[data-auto] input[type=checkbox]")
    .forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
}

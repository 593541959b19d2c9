// The Rollout tab: fetches its live part every few seconds (no page reload) and sends the
// buttons' actions to the control plane's own endpoints, with the page's CSRF token and the
// approval token typed in. Refusals are shown in words (the control plane's message).
(function () {
  "use strict";
  var root = document.getElementById("rollout");
  if (!root) { return; }
  var d = root.dataset;
  var live = document.getElementById("live");
  var result = document.getElementById("act-result");
  var csrf = d.csrf;
  var timer = null;
  window.powerxPageLoadedAt = window.powerxPageLoadedAt || Date.now();

  function query() {
    return "?dag_id=" + encodeURIComponent(d.dagId) + "&run_id=" + encodeURIComponent(d.runId);
  }

  function refresh() {
    return fetch(d.liveUrl + query(), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { return r.text().then(function (t) { throw new Error(r.status + ": " + t); }); }
        return r.json();
      })
      .then(function (body) {
        live.innerHTML = body.html;
        var stale = document.getElementById("live-error");
        if (stale) { stale.parentNode.removeChild(stale); }
        if (body.csrf) { csrf = body.csrf; }
        root.dataset.active = body.active ? "true" : "false";
        root.dataset.updated = String(Date.now());
        var batch = document.getElementById("act-batch");
        if (batch && !batch.value && body.waiting.length) {
          var m = /^batch_(\d+)\./.exec(body.waiting[0]);
          if (m) { batch.value = m[1]; }
        }
        if (!body.active) { stop(); }
      })
      .catch(function (err) {
        var warn = document.getElementById("live-error");
        if (!err) { return; }
        if (!warn) {
          warn = document.createElement("p");
          warn.id = "live-error"; warn.className = "notice fail"; warn.setAttribute("role", "alert");
          live.parentNode.insertBefore(warn, live);
        }
        warn.textContent = "Live update failed (retrying): " + err.message;
      });
  }

  var polling = d.active === "true";
  function stop() { polling = false; if (timer) { clearTimeout(timer); timer = null; } }
  // one request at a time: the next poll is planned when the last one has answered
  function loop() {
    refresh().then(function () {
      if (polling) { timer = setTimeout(loop, parseInt(d.pollMs, 10) || 2000); }
    });
  }
  if (polling) { timer = setTimeout(loop, parseInt(d.pollMs, 10) || 2000); }

  var PATHS = {
    approve: "decisions", reject: "decisions", pause: "decisions", resume: "decisions",
    rollback: "rollback"
  };

  function say(text, ok) {
    result.textContent = text;
    result.className = "result" + (ok === null ? "" : ok ? " ok" : " refused");
  }

  function act(action, button) {
    var reason = document.getElementById("act-reason").value.trim();
    var token = document.getElementById("act-token").value.trim();
    var batch = document.getElementById("act-batch").value.trim();
    if (!reason) { say("Refused before sending: give a reason (it is recorded).", false); document.getElementById("act-reason").focus(); return; }
    if (!token) { say("Refused before sending: '" + action + "' needs an approval token (paste it from the approval system).", false); document.getElementById("act-token").focus(); return; }
    var url, body;
    if (PATHS[action] === "rollback") {
      url = d.api + "/rollback";
      body = { run_id: d.runId, reason: reason };
    } else {
      url = d.api + "/runs/" + encodeURIComponent(d.runId) + "/decisions";
      body = { decision: action, reason: reason };
      if (batch && action !== "pause") { body.batch = parseInt(batch, 10); }
    }
    var headers = { "Content-Type": "application/json", "X-Approval-Token": token };
    if (csrf) { headers[d.csrfHeader] = csrf; }
    button.disabled = true;
    say("Sending " + action + "...", null);
    fetch(url, { method: "POST", credentials: "same-origin", headers: headers, body: JSON.stringify(body) })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) { return { r: r, j: j }; });
      })
      .then(function (x) {
        if (x.r.ok) {
          document.getElementById("act-token").value = "";
          say(action + " accepted (HTTP " + x.r.status + ")" + (x.j.task_id ? ": answered " + x.j.task_id : "") +
              (x.j.control_id ? ": control " + x.j.control_id : "") + ". The token is used up.", true);
          refresh();
        } else {
          var det = (x.j && x.j.detail) || {};
          say("Refused (" + x.r.status + (det.code ? " " + det.code : "") + "): " + (det.message || JSON.stringify(x.j)), false);
        }
      })
      .catch(function (err) { say("Could not reach the control plane: " + err.message, false); })
      .then(function () { button.disabled = false; });
  }

  var buttons = document.querySelectorAll("[data-action]");
  Array.prototype.forEach.call(buttons, function (b) {
    b.addEventListener("click", function () { act(b.dataset.action, b); });
  });
})();

// keyhold console: a read-only view of the audit log and the key list.
// Written by hand, no library. The access token lives only in the closure
// below: never in a cookie, localStorage, sessionStorage, IndexedDB or a
// URL. Every call to the API carries it as a Bearer header; signing out
// (or closing or reloading the tab) forgets it. Everything shown from the
// server is set with textContent, never parsed as HTML.
//
// Over 500 lines: the whole console in one hand-written script, served as one hashed asset.
(function () {
  "use strict";

  var token = null; // the pasted access token, memory only
  var me = null; // GET /api/whoami
  var OUTCOMES = (document.body.dataset.outcomes || "").split(",").filter(Boolean);
  var ACTIONS = (document.body.dataset.actions || "").split(",").filter(Boolean);
  var SOON_DAYS = 14;

  var audit = {
    cursors: [], // before_seq of each page shown so far (null: newest)
    cursor: null,
    rows: [],
    bucket: "hour",
    stats: null, // the last GET /api/audit/stats answer drawn
    // A random id made at each sign-in, sent with the pages of the log so
    // that the server records this sign-in's views as one session
    // (docs/audit.md). It is no credential: every call needs the token.
    session: null,
  };
  var current = null; // the view shown: "audit", "keys" or "nothing"
  // The record detail opens in a table row right under its record; it
  // lives here (after the table) while no record is open.
  var detailBox = $("detail"), detailHome = detailBox.parentNode;

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function show(node, yes) { node.hidden = !yes; }
  function can(scope) { return !!me && me.scopes.indexOf(scope) >= 0; }

  // ---- the one way this page talks to the server ----
  // A call that cannot reach keyhold fails with `offline` set (one banner
  // says so, however many calls failed); a token the server refuses fails
  // with `unauthenticated` set and the server's own reason (revoked,
  // expired when) as its message.
  function api(path, extra) {
    if (!token) return Promise.reject(new Error("signed out"));
    var headers = { "Authorization": "Bearer " + token, "Accept": "application/json" };
    Object.keys(extra || {}).forEach(function (k) { headers[k] = extra[k]; });
    return fetch(path, {
      method: "GET",
      headers: headers,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      redirect: "error",
    }).then(function (r) {
      // A proxy in front answers for a keyhold that does not.
      if (r.status === 502 || r.status === 504) {
        throw offline("The proxy in front of it answered HTTP " + r.status + ".");
      }
      answering();
      if (r.status === 401) {
        return detailOf(r).then(function (d) {
          var e = new Error(d);
          e.unauthenticated = true;
          if (me) signOut("Signed out: the server refused the token: " + d);
          throw e;
        });
      }
      return r;
    }, function () {
      throw offline("The browser could not reach it at " + location.host + ".");
    });
  }
  function offline(why) {
    var e = new Error("keyhold is not answering. " + why + " Check that keyhold serve is running, then try again.");
    e.offline = true;
    // Signed in: one banner over the view, whose panels mark what they
    // show as out of date. Signing in: the sign-in form says it.
    if (me) {
      $("offline-detail").textContent = why;
      show($("offline"), true);
    }
    return e;
  }
  function answering() { show($("offline"), false); }
  $("offline-retry").addEventListener("click", function () {
    answering();
    if (me && current) showView(current);
  });
  function detailOf(r) {
    return r.json().then(function (j) { return (j && j.detail) || ("HTTP " + r.status); },
      function () { return "HTTP " + r.status; });
  }
  // What a panel says about a failed call: nothing when the banner (not
  // answering) or the sign-in form (token refused) already says it.
  function problem(err) {
    if (!token || !err || err.offline || err.unauthenticated) return null;
    return err.message ? err.message : String(err);
  }
  function failWith(node) {
    return function (err) {
      var msg = problem(err);
      if (msg === null) return;
      node.textContent = msg;
      show(node, true);
    };
  }
  // The audit view's one error box: each distinct message once (a bad
  // filter fails the page and the chart alike).
  function auditError(err) {
    var msg = problem(err), box = $("audit-error");
    if (msg === null) return;
    var seen = Array.prototype.some.call(box.childNodes, function (p) { return p.textContent === msg; });
    if (!seen) box.appendChild(el("p", null, msg));
    show(box, true);
  }
  function clearAuditError() { clear($("audit-error")); show($("audit-error"), false); }
  function okOrThrow(r) {
    if (r.ok) return r;
    return detailOf(r).then(function (d) { throw new Error(d); });
  }

  // ---- sign in / out ----
  $("signin").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("token");
    var candidate = input.value.trim();
    input.value = "";
    show($("signin-error"), false);
    if (!candidate) return;
    token = candidate;
    candidate = null;
    audit.session = newSession();
    api("../api/whoami").then(okOrThrow).then(function (r) { return r.json(); }).then(function (who) {
      me = who;
      signedIn();
    }).catch(function (err) {
      token = null;
      me = null;
      audit.session = null;
      $("signin-error").textContent = err.unauthenticated
        ? "The server refused this token: " + err.message : err.message;
      show($("signin-error"), true);
      input.focus();
    });
  });

  function newSession() {
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x < 16 ? "0" : "") + x.toString(16); }).join("");
  }

  function signedIn() {
    show($("signin-view"), false);
    show($("nav"), true);
    show($("who"), true);
    var limited = me.providers ? " · providers: " + me.providers.join(", ") : "";
    $("who-name").textContent = "Signed in as " + me.name + limited;
    // The audit log covers every provider: a provider-limited token is
    // refused it by the server, so the page does not offer it.
    var audits = can("audit:read") && !me.providers;
    show($("tab-audit"), audits);
    show($("tab-keys"), can("keys:list"));
    show($("limited-note"), can("audit:read") && !!me.providers);
    if (audits) showView("audit");
    else if (can("keys:list")) showView("keys");
    else showView("nothing");
  }

  function signOut(message) {
    token = null;
    me = null;
    current = null;
    audit.session = null;
    closeRecord();
    clearFilters();
    audit.rows = [];
    audit.stats = null;
    audit.cursors = [];
    audit.cursor = null;
    ["audit-rows", "keys-rows", "keys-head", "chart", "legend", "detail-fields", "audit-error"].forEach(function (id) { clear($(id)); });
    $("chain").textContent = "";
    $("chain").className = "panel";
    $("page-info").textContent = "";
    $("who-name").textContent = "";
    ["audit-view", "keys-view", "nothing-view", "nav", "who", "audit-error", "keys-error", "limited-note", "offline"].forEach(function (id) { show($(id), false); });
    show($("signin-view"), true);
    if (message) {
      $("signin-error").textContent = message;
      show($("signin-error"), true);
    } else {
      show($("signin-error"), false);
    }
    $("token").focus();
  }
  $("signout").addEventListener("click", function () { signOut(); });

  function showView(name) {
    current = name;
    ["audit", "keys", "nothing"].forEach(function (v) { show($(v + "-view"), v === name); });
    ["audit", "keys"].forEach(function (v) {
      var t = $("tab-" + v);
      if (v === name) t.setAttribute("aria-current", "page"); else t.removeAttribute("aria-current");
    });
    if (name === "audit") { loadChain(); reloadAudit(); }
    if (name === "keys") loadKeys();
  }
  $("tab-audit").addEventListener("click", function () { showView("audit"); });
  $("tab-keys").addEventListener("click", function () { showView("keys"); });

  // ---- audit: filters ----
  OUTCOMES.forEach(function (o) { $("f-outcome").appendChild(el("option", { value: o }, o)); });
  ACTIONS.forEach(function (a) { $("f-action").appendChild(el("option", { value: a }, a)); });

  function utc(local) {
    if (!local) return "";
    // datetime-local gives YYYY-MM-DDTHH:MM[:SS]; the fields are UTC.
    return (local.length === 16 ? local + ":00" : local) + "Z";
  }
  function filterParams() {
    var p = new URLSearchParams();
    var since = utc($("f-since").value), until = utc($("f-until").value);
    if (since) p.set("since", since);
    if (until) p.set("until", until);
    [["key_id", "f-key"], ["caller", "f-caller"], ["outcome", "f-outcome"], ["action", "f-action"]].forEach(function (pair) {
      var v = $(pair[1]).value.trim();
      if (v) p.set(pair[0], v);
    });
    return p;
  }
  $("filters").addEventListener("submit", function (ev) { ev.preventDefault(); reloadAudit(); });
  $("clear-filters").addEventListener("click", function () { clearFilters(); reloadAudit(); });
  // HTMLFormElement's own reset: a control named like a form property
  // would shadow it.
  function clearFilters() { HTMLFormElement.prototype.reset.call($("filters")); }

  function reloadAudit() {
    clearAuditError();
    audit.cursors = [];
    audit.cursor = null;
    loadPage();
    loadChart();
  }

  // ---- audit: pages, newest first, by seq cursor ----
  function loadPage() {
    var p = filterParams();
    p.set("order", "desc");
    p.set("limit", $("f-limit").value);
    if (audit.cursor !== null) p.set("before_seq", String(audit.cursor));
    $("page-info").textContent = "Loading…";
    api("../api/audit?" + p.toString(), { "X-Keyhold-Console-Session": audit.session }).then(okOrThrow).then(function (r) {
      var more = r.headers.get("X-Keyhold-More") === "true";
      return r.text().then(function (body) { return { body: body, more: more }; });
    }).then(function (page) {
      var rows = page.body.split("\n").filter(Boolean).map(function (line) {
        try { return JSON.parse(line); } catch (e) { return { error: "unreadable line" }; }
      });
      audit.rows = rows;
      renderRows(rows);
      $("audit-table").classList.remove("stale");
      $("older").disabled = !page.more;
      $("newer").disabled = audit.cursors.length === 0;
      var first = rows.length ? rows[0].seq : null, last = rows.length ? rows[rows.length - 1].seq : null;
      $("page-info").textContent = rows.length
        ? "Records " + first + " – " + last + (page.more ? " (older ones follow)" : " (oldest matching)")
        : "No matching records";
    }).catch(function (err) {
      if (!token) return;
      // What the table still shows is not this page: say so.
      var stale = audit.rows.length > 0;
      $("audit-table").classList.toggle("stale", stale);
      $("page-info").textContent = stale ? "Out of date: these rows are from before the last load failed." : "";
      auditError(err);
    });
  }
  $("older").addEventListener("click", function () {
    if (!audit.rows.length) return;
    audit.cursors.push(audit.cursor);
    audit.cursor = audit.rows[audit.rows.length - 1].seq;
    loadPage();
  });
  $("newer").addEventListener("click", function () {
    if (!audit.cursors.length) return;
    audit.cursor = audit.cursors.pop();
    loadPage();
  });
  $("newest").addEventListener("click", function () { reloadAudit(); loadChain(); });

  function outcomeBadge(outcome) {
    return el("span", { "class": "badge " + (outcome === "success" ? "out-success" : "out-other") }, outcome || "?");
  }
  function renderRows(rows) {
    var body = $("audit-rows");
    closeRecord();
    clear(body);
    rows.forEach(function (r, i) {
      var tr = el("tr");
      var seqCell = el("td", { "class": "seq" });
      var b = el("button", { type: "button", "aria-label": "Open record " + r.seq, "data-index": String(i) }, "#" + r.seq);
      b.addEventListener("click", function () { openRecord(i, tr); });
      seqCell.appendChild(b);
      tr.appendChild(seqCell);
      if (r.error) {
        var bad = el("td", { colspan: "6", "class": "error" }, r.error);
        tr.appendChild(bad);
      } else {
        tr.appendChild(el("td", { "class": "time" }, r.at));
        tr.appendChild(el("td", null, r.action));
        var oc = el("td");
        oc.appendChild(outcomeBadge(r.outcome));
        if (r.count) oc.appendChild(document.createTextNode(" ×" + r.count));
        tr.appendChild(oc);
        tr.appendChild(el("td", null, r.caller));
        tr.appendChild(el("td", { "class": "wide mono" }, [r.provider, r.key_id].filter(Boolean).join(" · ")));
        tr.appendChild(el("td", { "class": "wide mono" }, r.ip + (r.peer ? " via " + r.peer : "")));
      }
      body.appendChild(tr);
    });
  }
  function openRecord(i, tr) {
    var r = audit.rows[i];
    if (!r) return;
    Array.prototype.forEach.call(document.querySelectorAll("#audit-rows tr.selected"), function (x) { x.classList.remove("selected"); });
    tr.classList.add("selected");
    var dl = $("detail-fields");
    clear(dl);
    Object.keys(r).forEach(function (k) {
      if (r[k] === null || r[k] === undefined || r[k] === "") return;
      dl.appendChild(el("dt", null, k));
      dl.appendChild(el("dd", null, typeof r[k] === "object" ? JSON.stringify(r[k]) : r[k]));
    });
    $("detail-title").textContent = "Record #" + r.seq;
    // Right under its row, not below the whole page of rows.
    var old = document.querySelector("#audit-rows tr.detail-row");
    if (old) old.remove();
    var row = el("tr", { "class": "detail-row" }), cell = el("td", { colspan: String(tr.children.length) });
    cell.appendChild(detailBox);
    row.appendChild(cell);
    tr.parentNode.insertBefore(row, tr.nextSibling);
    show(detailBox, true);
    detailBox.focus();
  }
  // Closes the open record and puts its box back after the table.
  function closeRecord() {
    show(detailBox, false);
    detailHome.appendChild(detailBox);
    var row = document.querySelector("#audit-rows tr.detail-row");
    if (row) row.remove();
  }
  $("detail-close").addEventListener("click", function () {
    closeRecord();
    var sel = document.querySelector("#audit-rows tr.selected button");
    if (sel) sel.focus();
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && !$("detail").hidden) $("detail-close").click();
  });

  // ---- audit: chain status ----
  function loadChain() {
    var box = $("chain");
    box.className = "panel";
    box.textContent = "Checking the chain…";
    api("../api/audit/verify").then(okOrThrow).then(function (r) { return r.json(); }).then(function (v) {
      clear(box);
      var ok = v.status === "ok";
      box.className = "panel " + (ok ? "ok" : "broken");
      var head = el("p");
      head.appendChild(el("span", { "class": "state" }, ok ? "Chain verifies" : "Chain BROKEN"));
      head.appendChild(document.createTextNode(ok
        ? " — every record is linked and covered by a signature."
        : " at seq " + v.seq + ": " + v.problem + ". Run `keyhold audit verify` on the host."));
      box.appendChild(head);
      var dl = el("dl");
      function row(k, val) { if (val === undefined || val === null) return; dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", { "class": "mono" }, val)); }
      if (ok) {
        row("records", v.records);
        row("head", v.head_seq + " : " + v.head_mac);
        row("signed by", v.signed_by);
      } else {
        row("first bad seq", v.seq);
        row("problem", v.problem);
        row("detail", v.detail);
      }
      row("public key", v.public_key);
      box.appendChild(dl);
    }).catch(function (err) {
      if (!token) return;
      // Not checked is not broken: red only for a chain found broken.
      box.className = "panel";
      box.textContent = err.offline ? "The chain could not be checked (see the message above)."
        : "The chain could not be checked: " + err.message;
    });
  }

  // ---- audit: the chart ----
  function setBucket(b) {
    audit.bucket = b;
    $("bucket-hour").setAttribute("aria-pressed", String(b === "hour"));
    $("bucket-day").setAttribute("aria-pressed", String(b === "day"));
    loadChart();
  }
  $("bucket-hour").addEventListener("click", function () { setBucket("hour"); });
  $("bucket-day").addEventListener("click", function () { setBucket("day"); });

  function loadChart() {
    var p = filterParams();
    p.set("bucket", audit.bucket);
    if (!p.has("since") && !p.has("until")) {
      // Default spans: two days of hours, sixty days of days.
      var span = audit.bucket === "hour" ? 48 * 3600e3 : 60 * 86400e3;
      p.set("since", new Date(Date.now() - span).toISOString());
    }
    api("../api/audit/stats?" + p.toString()).then(okOrThrow).then(function (r) { return r.json(); })
      .then(function (h) { markChart(false); drawChart(h); })
      .catch(function (err) {
        if (!token) return;
        // A chart still drawn is marked out of date; the reason is said
        // once, in the banner or the audit view's error box.
        if (err.offline && audit.stats) { markChart(true); return; }
        audit.stats = null;
        clear($("chart"));
        clear($("legend"));
        $("chart").appendChild(el("p", { "class": "muted" }, "Not drawn: see the message above."));
        auditError(err);
      });
  }
  function markChart(stale) {
    $("chart").classList.toggle("stale", stale);
    $("legend").classList.toggle("stale", stale);
  }
  // Redrawn at the new width when the window changes size.
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      if (token && audit.stats && !$("audit-view").hidden) drawChart(audit.stats);
    }, 100);
  });
  function drawChart(h) {
    audit.stats = h;
    var box = $("chart"), legend = $("legend");
    clear(box);
    clear(legend);
    var step = h.bucket === "day" ? 86400e3 : 3600e3;
    var since = Math.floor(Date.parse(h.since) / step) * step, until = Date.parse(h.until);
    var n = Math.max(1, Math.min(400, Math.ceil((until - since) / step)));
    if (n === 400) since = until - 400 * step;
    var byStart = {};
    (h.buckets || []).forEach(function (b) { byStart[Date.parse(b.start)] = b.counts; });
    var max = 1, seen = {};
    for (var i = 0; i < n; i++) {
      var c = byStart[since + i * step] || {}, tot = 0;
      Object.keys(c).forEach(function (o) { tot += c[o]; seen[o] = true; });
      if (tot > max) max = tot;
    }
    // Drawn at the box's own width, so text is never stretched.
    var W = Math.max(200, box.clientWidth || 1000), H = 160, left = 34, bottom = 18, bw = (W - left) / n;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
      "aria-label": "Attempts per " + h.bucket + " by outcome, " + h.since + " to " + h.until });
    s.appendChild(svg("line", { "class": "axis", x1: left, y1: H - bottom, x2: W, y2: H - bottom }));
    var top = svg("text", { x: 2, y: 10 }); top.textContent = String(max); s.appendChild(top);
    var zero = svg("text", { x: 2, y: H - bottom }); zero.textContent = "0"; s.appendChild(zero);
    var order = OUTCOMES.concat(Object.keys(seen).filter(function (o) { return OUTCOMES.indexOf(o) < 0; }));
    for (i = 0; i < n; i++) {
      var start = since + i * step, counts = byStart[start] || {}, y = H - bottom;
      order.forEach(function (o) {
        var v = counts[o];
        if (!v) return;
        var hgt = (H - bottom - 14) * v / max;
        y -= hgt;
        var r = svg("rect", { x: (left + i * bw + bw * 0.1).toFixed(2), y: y.toFixed(2), width: Math.max(0.5, bw * 0.8).toFixed(2),
          height: Math.max(0.5, hgt).toFixed(2), "class": OUTCOMES.indexOf(o) >= 0 ? "o-" + o : "o-other" });
        var t = svg("title"); t.textContent = new Date(start).toISOString() + " " + o + ": " + v;
        r.appendChild(t);
        s.appendChild(r);
      });
    }
    var l1 = svg("text", { x: left, y: H - 4 }); l1.textContent = new Date(since).toISOString().slice(0, h.bucket === "day" ? 10 : 13).replace("T", " ");
    var l2 = svg("text", { x: W - 4, y: H - 4, "text-anchor": "end" }); l2.textContent = new Date(until).toISOString().slice(0, 16).replace("T", " ");
    s.appendChild(l1); s.appendChild(l2);
    box.appendChild(s);
    var any = false;
    order.forEach(function (o) {
      if (!seen[o]) return;
      any = true;
      var li = el("li");
      li.appendChild(el("span", { "class": "swatch " + (OUTCOMES.indexOf(o) >= 0 ? "o-" + o : "o-other"), "aria-hidden": "true" }));
      var total = 0;
      Object.keys(byStart).forEach(function (k) { total += byStart[k][o] || 0; });
      li.appendChild(document.createTextNode(o + " (" + total + ")"));
      legend.appendChild(li);
    });
    if (!any) legend.appendChild(el("li", { "class": "muted" }, "No attempts in this span."));
  }

  // ---- audit: downloads of the current filter ----
  function download(format) {
    var p = filterParams();
    p.set("format", format);
    api("../api/audit?" + p.toString()).then(okOrThrow).then(function (r) { return r.blob(); }).then(function (blob) {
      var url = URL.createObjectURL(blob);
      var a = el("a", { href: url, download: "keyhold-audit." + format });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    }).catch(auditError);
  }
  $("dl-jsonl").addEventListener("click", function () { download("jsonl"); });
  $("dl-csv").addEventListener("click", function () { download("csv"); });

  // ---- keys ----
  function loadKeys() {
    show($("keys-error"), false);
    // Live keys, then the deleted ones still in their recovery window
    // (shown with a "deleted" badge and when they will be destroyed).
    var list = function (url) {
      return api(url).then(okOrThrow).then(function (r) { return r.json(); });
    };
    Promise.all([list("../api/keys"), list("../api/keys?deleted=true")])
      .then(function (both) { renderKeys(both[0].concat(both[1])); })
      .catch(function (err) {
        if (!token) return;
        // Never "No keys stored" for a list that could not be read, nor
        // an old list shown as if current.
        clear($("keys-head"));
        clear($("keys-rows"));
        $("keys-head").appendChild(el("th", { scope: "col" }, "Keys"));
        var tr = el("tr");
        tr.appendChild(el("td", { "class": "muted" }, "Not shown: the key list could not be read (see the message above)."));
        $("keys-rows").appendChild(tr);
        failWith($("keys-error"))(err);
      });
  }
  function renderKeys(keys) {
    var head = $("keys-head"), body = $("keys-rows");
    clear(head);
    clear(body);
    // The version column always; deletion columns only when a key is
    // deleted.
    var cols = [["provider", "Provider"], ["key_name", "Name"], ["created_at", "Created (UTC)"],
      ["last_used", "Last used (UTC)"], ["expires_at", "Expires (UTC)"]];
    [["version", "Version"], ["deleted_at", "Deleted (UTC)"], ["purge_at", "Destroyed at (UTC)"]].forEach(function (c) {
      if (keys.some(function (k) { return k[c[0]] !== undefined && k[c[0]] !== null; })) cols.push(c);
    });
    cols.forEach(function (c) { head.appendChild(el("th", { scope: "col" }, c[1])); });
    head.appendChild(el("th", { scope: "col" }, "Status"));
    var now = Date.now();
    keys.sort(function (a, b) { return (a.provider + a.key_name).localeCompare(b.provider + b.key_name); });
    keys.forEach(function (k) {
      var tr = el("tr");
      cols.forEach(function (c) {
        var v = k[c[0]];
        if (Array.isArray(v)) v = v.length;
        tr.appendChild(el("td", { "class": /_at$|last_used/.test(c[0]) ? "time" : "" }, v === null || v === undefined ? "—" : v));
      });
      var st = el("td");
      var exp = k.expires_at ? Date.parse(k.expires_at) : null;
      if (k.deleted_at) { tr.className = "deleted"; st.appendChild(el("span", { "class": "badge bad" }, "deleted")); }
      else if (exp !== null && exp <= now) { tr.className = "expired"; st.appendChild(el("span", { "class": "badge bad" }, "expired")); }
      else if (exp !== null && exp - now < SOON_DAYS * 86400e3) {
        tr.className = "soon";
        var days = Math.max(0, Math.floor((exp - now) / 86400e3));
        st.appendChild(el("span", { "class": "badge warn" }, "expires soon (" + days + " d)"));
      } else { st.appendChild(el("span", { "class": "badge ok" }, "live")); }
      tr.appendChild(st);
      body.appendChild(tr);
    });
    if (!keys.length) {
      var tr = el("tr");
      tr.appendChild(el("td", { colspan: String(cols.length + 1), "class": "muted" }, "No keys stored" + (me && me.providers ? " for these providers." : ".")));
      body.appendChild(tr);
    }
  }

  $("token").focus();
})();

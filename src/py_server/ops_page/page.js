"use strict";
// The ops page: it asks the proxy only what any client may ask (GET /, /health, /metrics and
// JSON-RPC over POST /mcp) with the token typed into it. Data from the server and from 1C reaches
// the document only as text (textContent, Text nodes), never as markup.
(() => {
  const PROTOCOL_VERSION = "2025-11-25";
  const MCP_ACCEPT = "application/json, text/event-stream";
  const MAX_PAGES = 100; // cursor pages per list, against a server that never ends one
  const MAX_SHOWN = 200000; // characters of a raw result put on the page
  // Headline counters: [metric, caption, label to break the total down by].
  const HEADLINES = [
    ["onec_mcp_onec_up", "1C up", "base"],
    ["onec_mcp_requests_total", "MCP requests", "outcome"],
    ["onec_mcp_onec_requests_total", "1C requests", "outcome"],
    ["onec_mcp_onec_in_flight", "1C calls in flight", null],
    ["onec_mcp_onec_queue_waiting", "Waiting for a 1C slot", null],
    ["onec_mcp_sessions", "Sessions", "transport"],
    ["onec_mcp_catalog_items", "Catalog items", "kind"],
  ];

  let token = ""; // the bearer token: in this variable only, never in storage or cookies
  let endpoint = "mcp"; // relative to the page, so a reverse proxy's path prefix is kept
  let session = null; // {id, version} once initialized
  let serverCapabilities = {};
  let nextId = 1;

  const byId = (id) => document.getElementById(id);

  class Unauthorized extends Error {}

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.append(...children); // strings become Text nodes
    return node;
  }

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function fetchFrom(path, options) {
    return fetch(path, { cache: "no-store", credentials: "omit", redirect: "error", ...options });
  }

  // --- MCP over Streamable HTTP --------------------------------------------------------------

  function sseMessages(text) {
    const messages = [];
    let data = [];
    for (const line of `${text}\n`.split(/\r\n|\r|\n/)) {
      if (line === "") {
        if (data.length) messages.push(JSON.parse(data.join("\n")));
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
    return messages;
  }

  function errorText(status, body) {
    if (body.startsWith("Invalid Origin header")) {
      return `HTTP ${status}: the proxy does not take requests from ${location.origin}; add it to MCP_ALLOWED_ORIGINS`;
    }
    try {
      const parsed = JSON.parse(body);
      if (parsed && parsed.error && parsed.error.message) return `HTTP ${status}: ${parsed.error.message}`;
    } catch (_) {
      // not JSON: show the text itself
    }
    return `HTTP ${status}: ${body.slice(0, 300) || "no body"}`;
  }

  async function post(message, withSession) {
    const headers = { "Content-Type": "application/json", Accept: MCP_ACCEPT, ...authHeaders() };
    if (withSession && session) {
      if (session.id) headers["Mcp-Session-Id"] = session.id;
      headers["Mcp-Protocol-Version"] = session.version;
    }
    const response = await fetchFrom(endpoint, { method: "POST", headers, body: JSON.stringify(message) });
    if (response.status === 401) throw new Unauthorized("the proxy wants a valid token");
    return response;
  }

  async function answer(response, id) {
    const body = await response.text();
    if (!response.ok) throw new Error(errorText(response.status, body));
    const type = response.headers.get("content-type") || "";
    const messages = type.includes("text/event-stream") ? sseMessages(body) : [JSON.parse(body)];
    const reply = messages.flat().find((message) => message && message.id === id);
    if (!reply) throw new Error("the proxy sent no answer to the request");
    if (reply.error) throw new Error(`${reply.error.message} (JSON-RPC error ${reply.error.code})`);
    return reply.result;
  }

  function closeSession(keepalive) {
    if (!session || !session.id) return;
    const headers = { "Mcp-Session-Id": session.id, "Mcp-Protocol-Version": session.version, ...authHeaders() };
    fetchFrom(endpoint, { method: "DELETE", headers, keepalive }).catch(() => {});
    session = null;
  }

  async function connect() {
    closeSession(false);
    const id = nextId++;
    const params = {
      protocolVersion: PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: "onec-mcp-proxy ops page", version: "1" },
    };
    const response = await post({ jsonrpc: "2.0", id, method: "initialize", params }, false);
    const result = await answer(response, id);
    session = { id: response.headers.get("mcp-session-id"), version: result.protocolVersion };
    serverCapabilities = result.capabilities || {};
    const note = await post({ jsonrpc: "2.0", method: "notifications/initialized" }, true);
    if (!note.ok) throw new Error(errorText(note.status, await note.text()));
  }

  let connecting = null; // one initialize at a time, whoever asks

  function ensureSession() {
    if (session) return Promise.resolve();
    if (!connecting) connecting = connect().finally(() => (connecting = null));
    return connecting;
  }

  async function rpc(method, params) {
    await ensureSession();
    for (let attempt = 0; ; attempt++) {
      const id = nextId++;
      const response = await post({ jsonrpc: "2.0", id, method, params }, true);
      if (response.status === 404 && attempt === 0) {
        session = null; // the session ended on the server (idle timeout, restart): open a new one
        await ensureSession();
        continue;
      }
      return answer(response, id);
    }
  }

  async function listAll(method, key) {
    const items = [];
    let cursor;
    for (let page = 0; page < MAX_PAGES; page++) {
      const result = await rpc(method, cursor ? { cursor } : {});
      items.push(...(result[key] || []));
      cursor = result.nextCursor;
      if (!cursor) break;
    }
    return items;
  }

  // --- token ---------------------------------------------------------------------------------

  function askForToken(message) {
    for (const id of ["tools", "resources", "prompts", "call-tool"]) byId(id).replaceChildren();
    for (const id of ["tools-count", "resources-count", "prompts-count"]) byId(id).textContent = "";
    byId("token-section").hidden = false;
    byId("token-error").textContent = message || "";
    byId("catalog-status").textContent = "The catalog needs the token.";
    byId("token").focus();
  }

  function useToken(value) {
    closeSession(false);
    token = value;
    byId("forget").hidden = !token;
    byId("token-section").hidden = true;
    refresh();
  }

  // --- status, counters ----------------------------------------------------------------------

  function pair(list, term, value) {
    list.append(el("dt", "", term), el("dd", "", String(value)));
  }

  async function loadIndex() {
    try {
      const response = await fetchFrom("./", { headers: { Accept: "application/json", ...authHeaders() } });
      const info = await response.json();
      byId("title").textContent = info.name || "onec-mcp-proxy";
      document.title = `${info.name || "onec-mcp-proxy"}: ops`;
      byId("version").textContent = `version ${info.version} · auth: ${info.auth}`;
      showEndpoints(info.bases || {});
    } catch (error) {
      byId("version").textContent = `The proxy's index is unavailable: ${error.message}`;
    }
  }

  function showEndpoints(bases) {
    const names = Object.keys(bases);
    const select = byId("endpoint");
    if (names.length < 2 || select.options.length) return;
    select.append(new Option("All bases (mcp)", "mcp"));
    for (const name of names) select.append(new Option(`${name} (${bases[name]})`, bases[name].replace(/^\//, "")));
    byId("endpoint-row").hidden = false;
  }

  async function loadHealth() {
    const badge = byId("status");
    const detail = byId("health-detail");
    const extras = byId("extras");
    detail.replaceChildren();
    extras.replaceChildren();
    let body;
    try {
      const response = await fetchFrom("health", { headers: { Accept: "application/json", ...authHeaders() } });
      body = await response.json();
    } catch (error) {
      badge.textContent = "unreachable";
      badge.className = "badge bad";
      byId("reason").textContent = error.message;
      return;
    }
    badge.textContent = body.status;
    badge.className = `badge ${body.status === "healthy" ? "ok" : "bad"}`;
    byId("reason").textContent = body.reason || "";
    if (!body.onec) {
      extras.append(el("li", "muted", "The detail needs the token."));
      return;
    }
    const onec = body.onec;
    pair(detail, "1C round trip", onec.round_trip_ms != null ? `${onec.round_trip_ms} ms` : onec.error || "—");
    if (onec.url) pair(detail, "1C", onec.url);
    if (body.server) pair(detail, "Server", `${body.server.name} ${body.server.version}`);
    if (body.uptime_s != null) pair(detail, "Uptime", `${body.uptime_s} s`);
    const sessions = Object.entries(body.sessions || {}).map(([kind, count]) => `${kind} ${count}`);
    pair(detail, "Sessions", sessions.join(", ") || "none");
    for (const [name, base] of Object.entries(body.bases || {})) {
      pair(detail, `Base ${name}`, base.round_trip_ms != null ? `${base.round_trip_ms} ms` : base.error || "—");
    }
    const entries = Object.entries(body.extras || {});
    if (!entries.length) extras.append(el("li", "muted", "No extras."));
    for (const [name, extra] of entries) {
      extras.append(el("li", "", el("span", "name", name), ": ", extra.state, extra.detail ? ` — ${extra.detail}` : ""));
    }
  }

  function parseMetrics(text) {
    // Prometheus text format: `name{label="value",...} number [timestamp]`.
    const series = [];
    for (const line of text.split("\n")) {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      for (const label of (match[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[label[1]] = label[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      series.push({ name: match[1], labels, value: Number(match[4]) });
    }
    return series;
  }

  function number(value) {
    return Number.isInteger(value) ? String(value) : value.toFixed(2);
  }

  async function loadMetrics() {
    const list = byId("metrics");
    const status = byId("metrics-status");
    list.replaceChildren();
    let response;
    try {
      response = await fetchFrom("metrics", { headers: { Accept: "text/plain", ...authHeaders() } });
    } catch (error) {
      status.textContent = `metrics unavailable: ${error.message}`;
      return;
    }
    if (response.status !== 200) {
      status.textContent = `metrics unavailable (HTTP ${response.status})`;
      return;
    }
    const series = parseMetrics(await response.text());
    status.textContent = "From /metrics.";
    for (const [metric, caption, by] of HEADLINES) {
      const matching = series.filter((item) => item.name === metric);
      if (!matching.length) continue;
      const total = matching.reduce((sum, item) => sum + item.value, 0);
      const parts = new Map();
      if (by) for (const item of matching) {
        const key = item.labels[by] || "—";
        parts.set(key, (parts.get(key) || 0) + item.value);
      }
      const breakdown = [...parts].map(([key, value]) => `${key} ${number(value)}`).join(", ");
      pair(list, caption, breakdown && parts.size > 1 ? `${number(total)} (${breakdown})` : breakdown || number(total));
    }
    if (!list.children.length) status.textContent = "metrics unavailable (no onec_mcp_* series)";
  }

  // --- catalog and the call form -------------------------------------------------------------

  function schemaBlock(summary, value) {
    const details = el("details", "", el("summary", "", summary));
    details.append(el("pre", "", JSON.stringify(value, null, 2)));
    return details;
  }

  function renderTools(tools) {
    const list = byId("tools");
    const select = byId("call-tool");
    const chosen = select.value;
    list.replaceChildren();
    select.replaceChildren();
    for (const tool of tools) {
      const tryIt = el("button", "", "Try");
      tryIt.type = "button";
      tryIt.setAttribute("aria-label", `Try ${tool.name}`);
      tryIt.addEventListener("click", () => {
        select.value = tool.name;
        byId("call-args").focus();
      });
      const head = el("div", "item-head", el("span", "name", tool.name), tryIt);
      const item = el("li", "", head);
      if (tool.title && tool.title !== tool.name) item.append(el("div", "muted", tool.title));
      if (tool.description) item.append(el("p", "desc", tool.description));
      item.append(schemaBlock("Input schema", tool.inputSchema || {}));
      if (tool.outputSchema) item.append(schemaBlock("Output schema", tool.outputSchema));
      list.append(item);
      select.append(new Option(tool.name, tool.name));
    }
    if (tools.some((tool) => tool.name === chosen)) select.value = chosen;
    byId("tools-count").textContent = `(${tools.length})`;
  }

  function renderItems(id, items, nameOf, extra) {
    const list = byId(id);
    list.replaceChildren();
    for (const item of items) {
      const entry = el("li", "", el("div", "name", nameOf(item)));
      if (item.description) entry.append(el("p", "desc", item.description));
      const more = extra(item);
      if (more) entry.append(el("div", "muted", more));
      list.append(entry);
    }
    byId(`${id}-count`).textContent = `(${items.length})`;
  }

  function notOffered(id, what) {
    byId(id).replaceChildren(el("li", "muted", `The server does not offer ${what}.`));
    byId(`${id}-count`).textContent = "";
  }

  async function loadCatalog() {
    const status = byId("catalog-status");
    status.textContent = "Loading the catalog…";
    try {
      renderTools(await listAll("tools/list", "tools"));
      if (serverCapabilities.resources) {
        const resources = await listAll("resources/list", "resources");
        renderItems("resources", resources, (r) => r.uri, (r) => [r.name, r.mimeType].filter(Boolean).join(" · "));
      } else {
        notOffered("resources", "resources");
      }
      if (serverCapabilities.prompts) {
        const prompts = await listAll("prompts/list", "prompts");
        const argumentsOf = (p) =>
          (p.arguments || []).map((a) => `${a.name}${a.required ? "*" : ""}`).join(", ");
        renderItems("prompts", prompts, (p) => p.name, (p) => (argumentsOf(p) ? `arguments: ${argumentsOf(p)}` : ""));
      } else {
        notOffered("prompts", "prompts");
      }
      status.textContent = "";
    } catch (error) {
      if (error instanceof Unauthorized) askForToken(token ? "The proxy refused this token." : "");
      else status.textContent = `The catalog could not be loaded: ${error.message}`;
    }
  }

  function showResult(result) {
    const raw = JSON.stringify(result, null, 2);
    const pre = byId("call-result");
    pre.textContent = raw.length > MAX_SHOWN ? `${raw.slice(0, MAX_SHOWN)}\n… (${raw.length} characters)` : raw;
    pre.hidden = false;
  }

  async function callTool(event) {
    event.preventDefault();
    const status = byId("call-status");
    const name = byId("call-tool").value;
    let args;
    try {
      args = JSON.parse(byId("call-args").value || "{}");
    } catch (error) {
      status.textContent = `The arguments are not JSON: ${error.message}`;
      return;
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      status.textContent = "The arguments must be a JSON object, like {}.";
      return;
    }
    const button = byId("call-button");
    button.disabled = true;
    status.textContent = `Calling ${name}…`;
    byId("call-result").hidden = true;
    const started = performance.now();
    try {
      const result = await rpc("tools/call", { name, arguments: args });
      const ms = Math.round(performance.now() - started);
      status.textContent = `${name}: ${result.isError ? "the tool reported an error" : "done"} in ${ms} ms`;
      showResult(result);
      loadMetrics();
    } catch (error) {
      if (error instanceof Unauthorized) {
        status.textContent = "The call needs the token.";
        askForToken(token ? "The proxy refused this token." : "");
      } else {
        status.textContent = `${name} failed: ${error.message}`;
      }
    } finally {
      button.disabled = false;
    }
  }

  async function refresh() {
    await Promise.all([loadIndex(), loadHealth(), loadMetrics(), loadCatalog()]);
  }

  byId("refresh").addEventListener("click", refresh);
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token");
    const value = input.value.trim();
    input.value = "";
    if (value) useToken(value);
  });
  byId("forget").addEventListener("click", () => useToken(""));
  byId("call-form").addEventListener("submit", callTool);
  byId("call-args").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) byId("call-form").requestSubmit();
  });
  byId("endpoint").addEventListener("change", (event) => {
    closeSession(false);
    endpoint = event.target.value;
    loadCatalog();
  });
  window.addEventListener("pagehide", () => closeSession(true));
  refresh();
})();

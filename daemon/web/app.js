// channeld admin page: live channel list and actions, channel forms, conversation browser,
// the people who write to the bots (their identities, linking, blocking).
// A plain ES module with no dependencies: the daemon serves this file as it is, offline.
// Every string that comes from the API reaches the DOM as text (text nodes, textContent or
// attribute values), never as markup.

const API = "/api/v1";
const POLL_MS = 2000;
const FAST_POLL_MS = 400; // right after an action, so the state change shows without a lag
const FAST_POLL_FOR_MS = 6000;
const TOKEN_KEY = "channeld.admin-token"; // sessionStorage: one entry per browser tab
const SECRET_PLACEHOLDER = "unchanged — type to replace";
const STATE_LABELS = {
  connected: "Connected",
  connecting: "Connecting…",
  disconnected: "Disconnected",
  disabled: "Disabled",
  failed: "Failed",
};
const CHAT_KINDS = { direct: "Direct chat", group: "Group chat" };

const $ = (selector) => document.querySelector(selector);

/** Creates an element; `children` may be nodes or strings (appended as text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

// ---- formatting ----------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

function humanDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

function relativeTime(iso) {
  const ago = (Date.now() - Date.parse(iso)) / 1000;
  if (ago < 5) return "just now";
  return `${humanDuration(ago).split(" ")[0]} ago`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function clockTime(iso) {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return (today ? clockFormat : fullFormat).format(date);
}

/** Points a <time> at `iso`: a clock or relative text, the full date on hover. */
function setTime(node, iso, relative) {
  if (!iso) {
    for (const name of ["datetime", "title", "data-relative"]) node.removeAttribute(name);
    node.textContent = "—";
    return;
  }
  node.setAttribute("datetime", iso);
  node.title = fullFormat.format(new Date(iso));
  node.toggleAttribute("data-relative", relative);
  node.textContent = relative ? relativeTime(iso) : clockTime(iso);
}

/** Relative times age even when the data behind them did not change. */
function tickRelativeTimes() {
  for (const node of document.querySelectorAll("time[data-relative]")) {
    node.textContent = relativeTime(node.getAttribute("datetime"));
  }
}

// ---- API client and token ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, payload, fallback) {
    const error = payload?.error ?? {};
    super(error.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.code = error.code ?? "http_error";
    this.fields = Array.isArray(error.fields) ? error.fields : [];
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  // every change says JSON, with a body or without: the daemon refuses other media types
  if (method !== "GET") headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, null, "cannot reach the daemon");
  }
  const payload = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) promptForToken(Boolean(token));
  if (!response.ok) throw new ApiError(response.status, payload, response.statusText);
  return payload;
}

function promptForToken(rejected) {
  const dialog = $("#token-dialog");
  $("#token-reason").textContent = rejected
    ? "That token was rejected. Enter the daemon's admin token."
    : "This daemon requires its admin token.";
  setLive("locked", "Token required");
  if (!dialog.open) dialog.showModal();
  $("#token-input").focus();
}

/** `#token=...` (the login URL the daemon prints) signs this tab in, then leaves the address bar. */
function takeTokenFromFragment() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token === null) return;
  if (token.trim()) sessionStorage.setItem(TOKEN_KEY, token.trim());
  // out of the address bar, the history and any bookmark made from here on
  history.replaceState(null, "", location.pathname + location.search);
}

function setupToken() {
  takeTokenFromFragment();
  const forget = $("#forget-token");
  const showForget = () => (forget.hidden = !sessionStorage.getItem(TOKEN_KEY));
  $("#token-form").addEventListener("submit", () => {
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
  });
  // Closing the dialog, with a token or without, retries: a 401 opens it again.
  $("#token-dialog").addEventListener("close", () => {
    showForget();
    refresh();
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    promptForToken(false);
  });
  showForget();
}

// ---- live refresh --------------------------------------------------------------------------

let pollTimer = null;
let running = null;
let queued = false;
let fastUntil = 0;

function setLive(mode, text) {
  $("#live").dataset.live = mode;
  $("#live-text").textContent = text;
}

/** Refreshes now, then polls quickly for a while: an action's effect follows within moments. */
function hurry() {
  fastUntil = Date.now() + FAST_POLL_FOR_MS;
  refresh();
}

function schedule() {
  clearTimeout(pollTimer);
  if (document.hidden || $("#token-dialog").open) return;
  pollTimer = setTimeout(refresh, Date.now() < fastUntil ? FAST_POLL_MS : POLL_MS);
}

/** One poll of everything on screen; calls made while one runs fold into a single rerun. */
function refresh() {
  if (running) {
    queued = true;
    return running;
  }
  running = (async () => {
    try {
      const { channels } = await api("GET", "/channels");
      renderChannels(channels);
      await refreshConversations();
      await refreshUsers();
      tickRelativeTimes();
      setLive("live", `Live · updated ${clockFormat.format(new Date())}`);
    } catch (error) {
      if (error.status === 401) return; // the token dialog says it
      const text = error.status ? `Error: ${error.message}` : "Daemon unreachable — retrying";
      setLive("offline", text);
    }
  })().finally(() => {
    running = null;
    if (queued) {
      queued = false;
      refresh();
    } else {
      schedule();
    }
  });
  return running;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    refresh();
    return;
  }
  clearTimeout(pollTimer);
  setLive("paused", "Paused while the tab is hidden");
});

// ---- channel table -------------------------------------------------------------------------

const rows = new Map(); // channel id -> ChannelRow: polls update rows in place, focus survives

function retryText(status) {
  if (!status.next_attempt_at || ["connected", "disabled"].includes(status.state)) return "";
  const wait = (Date.parse(status.next_attempt_at) - Date.now()) / 1000;
  return wait > 0.5 ? `retry in ${humanDuration(wait)}` : "retrying…";
}

function button(label, onclick, extra = "") {
  return el("button", { type: "button", class: `btn btn-small ${extra}`, onclick }, label);
}

class ChannelRow {
  constructor(id) {
    this.id = id;
    this.path = `/channels/${encodeURIComponent(id)}`;
    this.busy = false; // an action is in flight: a poll must not flip the switch back
    this.dot = el("span", { class: "dot", "aria-hidden": "true" });
    this.stateLabel = el("span", { class: "state-label" });
    this.retry = el("span", { class: "sub" });
    this.type = el("td");
    this.agent = el("td");
    this.source = el("span", { class: "badge" });
    this.uptime = el("td", { class: "uptime" });
    this.connected = el("time", { class: "connected-at" });
    this.lastEvent = el("time", { class: "last-event" });
    this.reconnects = el("td", { class: "num reconnects" });
    this.messages = el("td", { class: "num received" });
    this.error = el("span", { class: "error-text" });
    this.toggle = el("input", {
      type: "checkbox",
      role: "switch",
      "aria-label": `Enabled: ${id}`,
      onchange: () => this.setEnabled(this.toggle.checked),
    });
    this.restartButton = button("Restart", () => this.restart());
    this.editButton = button("Edit", () => openChannelForm(this.channel));
    this.deleteButton = button("Delete", () => this.delete(), "btn-danger-quiet");
    const slider = el("span", { class: "slider", "aria-hidden": "true" });
    this.tr = el(
      "tr",
      { "data-channel-id": id },
      el("td", {}, el("span", { class: "state" }, this.dot, this.stateLabel), this.retry),
      el(
        "td",
        { class: "channel-id" },
        el(
          "button",
          { type: "button", class: "btn-link", title: "Details", onclick: () => openDetail(id) },
          id,
        ),
      ),
      this.type,
      this.agent,
      el("td", {}, this.source),
      this.uptime,
      el("td", {}, this.connected),
      el("td", {}, this.lastEvent),
      this.reconnects,
      this.messages,
      el("td", { class: "last-error" }, this.error),
      el(
        "td",
        {},
        el(
          "div",
          { class: "actions" },
          el("label", { class: "switch", title: "Enable or disable" }, this.toggle, slider),
          this.restartButton,
          this.editButton,
          this.deleteButton,
        ),
      ),
    );
  }

  update(channel) {
    const status = channel.status;
    this.channel = channel;
    this.tr.dataset.state = this.dot.dataset.state = status.state;
    this.stateLabel.textContent = STATE_LABELS[status.state] ?? status.state;
    this.retry.textContent = retryText(status);
    this.type.textContent = channel.type;
    if (channel.webhook_url) {
      // webhook platforms call us: the operator pastes this URL into the platform's settings
      const url = el("code", { class: "webhook-url" }, channel.webhook_url);
      url.title = "Callback URL to give the platform";
      this.type.append(el("div", { class: "sub" }, url));
    }
    if (channel.voice_urls) {
      // its users may call the assistant; the URLs for the clouds' consoles are in the details
      this.type.append(el("div", { class: "sub voice-mark" }, "voice calls"));
    }
    this.agent.textContent = channel.agent;
    this.source.textContent = this.source.dataset.source = channel.source;
    this.source.title =
      channel.source === "config"
        ? "Declared in the config file: edit the file and reload to change or remove it"
        : "Created through the API; stored in the database";
    const uptime = status.uptime_seconds;
    this.uptime.textContent = uptime === null ? "—" : humanDuration(uptime);
    setTime(this.connected, status.connected_at, false);
    setTime(this.lastEvent, status.last_event_at, true);
    this.reconnects.textContent = String(status.reconnects);
    this.messages.textContent = String(status.messages_received);
    this.error.textContent = status.last_error ?? "—";
    this.error.title = status.last_error ?? "";
    this.error.classList.toggle("none", !status.last_error);
    if (!this.busy) this.toggle.checked = channel.enabled;
    // Config-file channels are changed in the file: the API answers 409 to edit and delete.
    this.editButton.hidden = this.deleteButton.hidden = channel.source !== "api";
    if (detail.id === this.id && $("#detail-dialog").open) renderDetail(channel);
  }

  /** Runs one API call for this row; failures become a toast with the server's message. */
  async act(call) {
    this.busy = true;
    this.tr.classList.add("busy");
    try {
      const view = await call();
      if (view) this.update(view);
      return true;
    } catch (error) {
      if (error.status !== 401) toast(`${this.id}: ${error.message}`, "error");
      return false;
    } finally {
      this.busy = false;
      this.tr.classList.remove("busy");
      hurry();
    }
  }

  async setEnabled(enabled) {
    this.toggle.disabled = true;
    const ok = await this.act(() => api("POST", `${this.path}/${enabled ? "enable" : "disable"}`));
    this.toggle.disabled = false;
    if (!ok) this.toggle.checked = !enabled;
  }

  async restart() {
    this.restartButton.disabled = true;
    const ok = await this.act(() => api("POST", `${this.path}/restart`));
    this.restartButton.disabled = false;
    if (ok) toast(`${this.id} restarted`);
  }

  async delete() {
    const question =
      `Delete channel “${this.id}”? It disconnects now, and its settings and secrets are ` +
      "removed from the database.";
    if (!(await confirmDialog(question))) return;
    if (await this.act(() => api("DELETE", this.path))) toast(`${this.id} deleted`);
  }
}

function renderChannels(channels) {
  const body = $("#channel-rows");
  const seen = new Set();
  channels.forEach((channel, index) => {
    let row = rows.get(channel.id);
    if (!row) {
      row = new ChannelRow(channel.id);
      rows.set(channel.id, row);
    }
    row.update(channel);
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] ?? null);
    seen.add(channel.id);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $("#channels-empty").hidden = channels.length > 0;
  $("#channel-count").textContent = channels.length ? String(channels.length) : "";
  const down = channels.filter((c) => c.enabled && c.status.state !== "connected").length;
  document.title = down ? `(${down} down) channeld admin` : "channeld admin";
  renderChannelFilter(channels.map((c) => c.id));
}

function confirmDialog(text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
      once: true,
    });
  });
}

// ---- channel details: the URLs to give the platforms and clouds, every setting ------------

const detail = { id: null, sections: new Set() };

/** The URLs an operator pastes into a platform's or a cloud's console, with where they go. */
function consoleUrls(channel) {
  const urls = [];
  if (channel.webhook_url) urls.push(["webhook_url", "Callback URL", channel.webhook_url]);
  const voice = channel.voice_urls;
  if (voice) {
    urls.push(["llm_endpoint", "Voice LLM endpoint (passed to ZEGO per call)", voice.llm_endpoint]);
    if (voice.aliyun_llm_base) {
      urls.push(["aliyun_llm_base", "Alibaba agent's LLM node: base URL", voice.aliyun_llm_base]);
    }
    urls.push(["callback", "Voice callback URL (the clouds' agent callbacks)", voice.callback]);
  }
  return urls;
}

/** Settings as dotted paths: a section's keys one by one, any other value whole. */
function flatSettings(settings, prefix = "") {
  const rows = [];
  for (const [key, value] of Object.entries(settings ?? {})) {
    const path = prefix + key;
    if (detail.sections.has(path) && value !== null && typeof value === "object") {
      rows.push(...flatSettings(value, `${path}.`));
    } else {
      rows.push([path, value]);
    }
  }
  return rows;
}

function shownValue(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function renderDetail(channel) {
  $("#detail-title").textContent = channel.id;
  const urls = consoleUrls(channel).map(([key, label, url]) =>
    el(
      "div",
      { class: "detail-row", "data-url": key },
      el("dt", {}, label),
      el("dd", {}, el("code", {}, url)),
    ),
  );
  const settings = flatSettings(channel.settings).map(([path, value]) =>
    el(
      "div",
      { class: "detail-row", "data-setting": path },
      el("dt", {}, el("code", {}, path)),
      el("dd", {}, shownValue(value)),
    ),
  );
  $("#detail-body").replaceChildren(
    urls.length ? el("h3", {}, "URLs for the consoles") : null,
    urls.length ? el("dl", { class: "detail-list detail-urls" }, urls) : null,
    el("h3", {}, "Settings"),
    el("p", { class: "field-hint" }, "Secrets are write-only: shown as ***."),
    el("dl", { class: "detail-list" }, settings),
  );
}

async function openDetail(id) {
  const row = rows.get(id);
  if (!row) return;
  try {
    const types = await loadChannelTypes();
    const schema = types.get(row.channel.type);
    detail.sections = new Set(schema ? sectionPaths(schema) : []);
  } catch {
    detail.sections = new Set(); // the settings show as JSON per top-level key
  }
  detail.id = id;
  renderDetail(row.channel);
  $("#detail-dialog").showModal();
}

// ---- channel form, built from the OpenAPI document -----------------------------------------
// The settings of each channel type come from `components.schemas` of /api/v1/openapi.json,
// which the server derives from its own config models: a new setting or a new channel type
// shows up here without a change to this file.

let channelTypes = null; // type tag -> JSON schema of its settings
let schemaDefs = {}; // components.schemas: nested sections are $refs into it
// the open form: { mode, channel, type, agents, fields: Map(path -> field),
// sections: Map(path -> section) }; a path is dotted: "client_secret", "voice.zego.server_secret"
let form = null;

function resolve(schema) {
  return schema.$ref ? (schemaDefs[schema.$ref.split("/").pop()] ?? {}) : schema;
}

async function loadChannelTypes() {
  if (channelTypes) return channelTypes;
  const schemas = (await api("GET", "/openapi.json")).components.schemas;
  schemaDefs = schemas;
  const settings = schemas.ChannelSettings;
  channelTypes = new Map();
  for (const variant of (settings.oneOf ?? [settings]).map(resolve)) {
    const tag = variant.properties?.type;
    channelTypes.set(tag?.const ?? tag?.default, variant);
  }
  return channelTypes;
}

async function loadAgents() {
  try {
    return (await api("GET", "/agents")).agents.map((agent) => agent.name);
  } catch {
    return null; // the agent field falls back to free text; the server still checks it
  }
}

/** An optional setting (`X | None`) is an anyOf with null; the form edits the other branch. */
function flatten(prop) {
  if (!prop.anyOf) return prop;
  const { anyOf, ...outer } = prop;
  return { ...(anyOf.find((p) => p.type !== "null") ?? {}), ...outer };
}

/** A nested settings model (`[channels.voice]`) is a section: a $ref to an object with properties.
 * Any other object (a provider's pass-through object) is one JSON value. */
function sectionSchema(prop) {
  if (!prop.$ref) return null;
  const target = resolve(prop);
  return target.type === "object" && target.properties ? target : null;
}

/** Dotted paths of the sections of a channel type's settings. */
function sectionPaths(schema, prefix = "") {
  const paths = [];
  for (const [name, raw] of Object.entries(schema.properties ?? {})) {
    const inner = sectionSchema(flatten(raw));
    if (!inner) continue;
    paths.push(prefix + name, ...sectionPaths(inner, `${prefix}${name}.`));
  }
  return paths;
}

function getPath(object, path) {
  let node = object;
  for (const key of path.split(".")) {
    if (node === null || typeof node !== "object" || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

function putPath(object, path, value) {
  const keys = path.split(".");
  const last = keys.pop();
  let node = object;
  for (const key of keys) {
    if (node[key] === null || typeof node[key] !== "object") node[key] = {};
    node = node[key];
  }
  node[last] = value;
}

const fieldId = (path) => `field-${path.replaceAll(".", "-")}`;
const titleOf = (key) => key.charAt(0).toUpperCase() + key.slice(1).replaceAll("_", " ");

function fieldKind(name, prop) {
  if (prop.format === "password" || prop.writeOnly) return "secret";
  if (name === "agent" && form.agents?.length) return "agent";
  if (prop.enum) return "enum";
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  return ["boolean", "integer", "number", "string"].includes(type) ? type : "json";
}

function options(values, selected) {
  return values.map((v) => el("option", { value: v, selected: v === selected }, String(v)));
}

function buildControl(field, value) {
  const { name, kind, prop } = field;
  const id = fieldId(name);
  const attrs = { id, name, "aria-describedby": `${id}-error` };
  switch (kind) {
    case "boolean":
      return el("input", { ...attrs, type: "checkbox", checked: Boolean(value) });
    case "enum":
    case "agent": {
      const values = kind === "agent" ? [...form.agents] : [...prop.enum];
      if (value !== undefined && value !== null && !values.includes(value)) values.push(value);
      return el("select", attrs, options(values, value));
    }
    case "secret":
      return el("input", {
        ...attrs,
        type: "password",
        autocomplete: "new-password",
        placeholder: field.stored ? SECRET_PLACEHOLDER : "",
      });
    case "integer":
    case "number":
      return el("input", {
        ...attrs,
        type: "number",
        step: kind === "integer" ? "1" : "any",
        min: prop.minimum,
        max: prop.maximum,
        value: value ?? "",
      });
    case "json":
      return el("textarea", { ...attrs, rows: "3" }, JSON.stringify(value) ?? "");
    default:
      return el("input", { ...attrs, type: "text", spellcheck: "false", value: value ?? "" });
  }
}

function fieldHint(field) {
  const { kind, prop } = field;
  if (kind === "secret") {
    return field.stored
      ? "Write-only: leave empty to keep the stored value."
      : "Write-only: never shown again.";
  }
  const parts = prop.description ? [prop.description] : [];
  if (prop.default !== undefined && prop.default !== "" && !["boolean", "agent"].includes(kind)) {
    parts.push(`default: ${prop.default}`);
  } else if (prop.default === undefined && !field.required) {
    parts.push("empty: the daemon's default");
  }
  if (prop.minimum !== undefined && prop.maximum !== undefined) {
    parts.push(`${prop.minimum} to ${prop.maximum}`);
  } else {
    if (prop.minimum !== undefined) parts.push(`at least ${prop.minimum}`);
    if (prop.exclusiveMinimum !== undefined) parts.push(`above ${prop.exclusiveMinimum}`);
    if (prop.maximum !== undefined) parts.push(`at most ${prop.maximum}`);
    if (prop.exclusiveMaximum !== undefined) parts.push(`below ${prop.exclusiveMaximum}`);
  }
  const hint = parts.join(" · ");
  return hint && hint[0].toUpperCase() + hint.slice(1);
}

function renderField(field, value) {
  const control = buildControl(field, value);
  const label = el(
    "label",
    { for: control.id, class: "field-label" },
    field.title,
    field.required ? el("span", { class: "req", title: "required" }, " *") : null,
    el("code", { class: "field-key" }, field.name),
  );
  const error = el("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
  const hint = el("p", { class: "field-hint" }, fieldHint(field));
  const wrapper =
    field.kind === "boolean"
      ? el("div", { class: "field field-check" }, control, label, error)
      : el("div", { class: "field" }, label, control, hint, error);
  wrapper.dataset.field = field.name;
  Object.assign(field, { control, error, wrapper });
  return wrapper;
}

function readField({ kind, control }) {
  if (kind === "boolean") return control.checked;
  if (kind === "secret") return control.value; // verbatim: spaces may belong to a secret
  const raw = control.value.trim();
  if (raw === "") return kind === "string" || kind === "enum" || kind === "agent" ? "" : null;
  if (kind === "integer" || kind === "number") {
    return Number.isFinite(Number(raw)) ? Number(raw) : raw; // not a number: the server says so
  }
  if (kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw; // the server names the field in its 422
    }
  }
  return raw;
}

/** What an operator fills for every channel comes first; tuning knobs with defaults fold away. */
function isEssential({ name, prop, kind, required }) {
  if (required || kind === "secret" || name === "agent" || name === "enabled") return true;
  if (prop["x-essential"]) return true; // a setting with a default that still deserves a look
  return prop.default === undefined || prop.default === "";
}

function renderTypeField(type) {
  const types = [...channelTypes.keys()];
  const select = el("select", { id: "field-type", name: "type" }, options(types, type));
  select.addEventListener("change", () => renderFields(select.value));
  const key = el("code", { class: "field-key" }, "type");
  const label = el("label", { for: "field-type", class: "field-label" }, "Type", key);
  return el("div", { class: "field", "data-field": "type" }, label, select);
}

/** A field of the form: `name` is its dotted path, `section` the section holding it (or null). */
function makeField(name, prop, required, section) {
  const key = name.split(".").pop();
  const field = { name, key, prop, required, section, title: prop.title ?? key };
  field.kind = fieldKind(name, prop);
  // a secret is stored where the channel had this section when the form opened: empty keeps it
  field.stored = form.mode === "edit" && (section === null || section.present);
  form.fields.set(name, field);
  return field;
}

/** A nested settings model as a fieldset. An optional one has a switch in its legend: off, the
 * section is absent (on edit: removed, with its secrets). A disabled fieldset hides its fields. */
function renderSection(path, prop, schema, required, parent, value) {
  const editing = form.mode === "edit";
  const present = editing ? value !== null && value !== undefined && sectionOn(parent) : required;
  const section = { path, parent, present, toggle: null };
  const id = fieldId(path);
  const heading = [titleOf(path.split(".").pop()), el("code", { class: "field-key" }, path)];
  let legend;
  if (required) {
    legend = el("legend", {}, heading);
  } else {
    section.toggle = el("input", {
      type: "checkbox",
      id: `${id}-on`,
      name: path,
      checked: present,
      "aria-controls": `${id}-body`,
    });
    const label = el("label", { for: `${id}-on`, class: "section-toggle" }, section.toggle, heading);
    legend = el("legend", {}, label);
  }
  const hint = schema.description ? el("p", { class: "field-hint" }, schema.description) : null;
  const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const body = el("div", { class: "section-fields", id: `${id}-body` });
  const fieldset = el("fieldset", { class: "section", "data-section": path }, legend, hint, error);
  fieldset.append(body);
  Object.assign(section, { error, wrapper: fieldset, control: section.toggle ?? fieldset });
  form.sections.set(path, section);
  if (section.toggle) {
    fieldset.disabled = !present;
    section.toggle.addEventListener("change", () => (fieldset.disabled = !section.toggle.checked));
  }
  const inner = new Set(schema.required ?? []);
  const stored = value !== null && typeof value === "object" ? value : {};
  for (const [key, raw] of Object.entries(schema.properties)) {
    const childPath = `${path}.${key}`;
    const childProp = flatten(raw);
    const nested = sectionSchema(childProp);
    if (nested) {
      body.append(renderSection(childPath, childProp, nested, inner.has(key), section, stored[key]));
      continue;
    }
    const field = makeField(childPath, childProp, inner.has(key), section);
    let start = childProp.default;
    if (field.kind === "secret") start = undefined;
    else if (editing && present) start = stored[key];
    body.append(renderField(field, start));
  }
  return fieldset;
}

/** Whether a section is on: its switch and every enclosing section's (no section: the top). */
function sectionOn(section) {
  if (!section) return true;
  return (!section.toggle || section.toggle.checked) && sectionOn(section.parent);
}

function renderFields(type) {
  const schema = channelTypes.get(type);
  const required = new Set(schema.required ?? []);
  const editing = form.mode === "edit";
  const current = editing ? { id: form.channel.id, ...form.channel.settings } : {};
  form.type = type;
  form.fields = new Map();
  form.sections = new Map();
  const essential = editing ? [] : [renderTypeField(type)];
  const advanced = [];
  const nested = [];
  for (const [name, raw] of Object.entries(schema.properties ?? {})) {
    const prop = flatten(raw);
    if (name === "type" || prop.const !== undefined) continue;
    if (editing && name === "enabled") continue; // the row's switch does that
    const inner = sectionSchema(prop);
    if (inner) {
      nested.push(renderSection(name, prop, inner, required.has(name), null, current[name]));
      continue;
    }
    const field = makeField(name, prop, required.has(name), null);
    const value = editing ? (field.kind === "secret" ? undefined : current[name]) : prop.default;
    const node = renderField(field, value);
    if (editing && name === "id") field.control.disabled = true; // ids never change
    (isEssential(field) ? essential : advanced).push(node);
  }
  $("#form-fields").replaceChildren(...essential);
  if (advanced.length) {
    const summary = el("summary", {}, "Advanced settings");
    const fields = el("div", { class: "advanced-fields" }, advanced);
    $("#form-fields").append(el("details", { class: "advanced" }, summary, fields));
  }
  $("#form-fields").append(...nested);
}

async function openChannelForm(channel) {
  let types;
  let agents;
  try {
    [types, agents] = await Promise.all([loadChannelTypes(), loadAgents()]);
  } catch (error) {
    if (error.status !== 401) toast(`Cannot load the settings schema: ${error.message}`, "error");
    return;
  }
  form = { mode: channel ? "edit" : "create", channel, agents };
  $("#channel-form-title").textContent = channel ? `Edit ${channel.id}` : "New channel";
  $("#form-submit").textContent = channel ? "Save" : "Create";
  clearFormErrors();
  renderFields(channel?.type ?? [...types.keys()][0]);
  $("#channel-dialog").showModal();
  [...form.fields.values()].find((f) => !f.control.disabled)?.control.focus();
}

function collectCreate() {
  const body = { type: form.type };
  for (const section of form.sections.values()) {
    if (sectionOn(section)) putPath(body, section.path, {}); // parents come before their children
  }
  for (const field of form.fields.values()) {
    if (!sectionOn(field.section)) continue;
    const value = readField(field);
    if (value !== null && value !== "") putPath(body, field.name, value); // blank: the default
  }
  return body;
}

function sameValue(a, b) {
  const blank = (v) => v === null || v === undefined || v === "";
  return (blank(a) && blank(b)) || JSON.stringify(a) === JSON.stringify(b);
}

/** Only what changed, nested as the settings are (the server merges a section key by key); an
 * empty secret input means "keep", so that secret is not sent at all. A section switched off is
 * sent as null (removed); one switched on is sent with every value it has. */
function collectPatch() {
  const patch = {};
  for (const section of form.sections.values()) {
    if (!sectionOn(section.parent)) continue; // it goes, or stays absent, with its parent
    if (section.present && !sectionOn(section)) putPath(patch, section.path, null);
    else if (!section.present && sectionOn(section)) putPath(patch, section.path, {});
  }
  for (const field of form.fields.values()) {
    if (field.name === "id" || !sectionOn(field.section)) continue;
    const value = readField(field);
    if (field.kind === "secret") {
      if (value !== "") putPath(patch, field.name, value);
    } else if (field.section && !field.section.present) {
      if (value !== null && value !== "") putPath(patch, field.name, value); // a new section
    } else if (!sameValue(value, getPath(form.channel.settings, field.name))) {
      putPath(patch, field.name, value);
    }
  }
  return patch;
}

function clearFormErrors() {
  const box = $("#form-error");
  box.hidden = true;
  box.textContent = "";
  for (const node of document.querySelectorAll("#channel-form .field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of document.querySelectorAll("#channel-form [aria-invalid]")) {
    node.removeAttribute("aria-invalid");
  }
}

/** The field or section an error path names: the longest known prefix of the dotted path. */
function formTarget(path) {
  const keys = String(path).split(".");
  for (let size = keys.length; size > 0; size--) {
    const name = keys.slice(0, size).join(".");
    const target = form.fields.get(name) ?? form.sections.get(name);
    if (target) return target;
  }
  return null;
}

/** A 422 names fields by path ("client_secret", "voice.zego.app_id"): each message goes under
 * its input, or under its section's title for the section as a whole. */
function showFormErrors(error) {
  let unplaced = false;
  let first = null;
  for (const { path, message } of error.fields) {
    const field = formTarget(path);
    if (!field) {
      unplaced = true;
      continue;
    }
    const previous = field.error.textContent;
    field.error.textContent = previous ? `${previous}; ${message}` : message;
    field.error.hidden = false;
    field.control.setAttribute("aria-invalid", "true");
    const details = field.wrapper.closest("details");
    if (details) details.open = true;
    first ??= field.control;
  }
  const box = $("#form-error");
  const placed = error.fields.length && !unplaced;
  box.textContent = placed ? "Please correct the highlighted fields." : error.message;
  box.hidden = false;
  first?.focus();
}

async function submitChannelForm(event) {
  event.preventDefault();
  clearFormErrors();
  const editing = form.mode === "edit";
  const body = editing ? collectPatch() : collectCreate();
  if (editing && Object.keys(body).length === 0) {
    $("#channel-dialog").close();
    toast("Nothing changed");
    return;
  }
  const submit = $("#form-submit");
  submit.disabled = true;
  try {
    const path = editing ? `/channels/${encodeURIComponent(form.channel.id)}` : "/channels";
    const view = await api(editing ? "PATCH" : "POST", path, body);
    $("#channel-dialog").close();
    toast(editing ? `${view.id} saved` : `${view.id} created`);
    hurry();
  } catch (error) {
    if (error.status !== 401) showFormErrors(error);
  } finally {
    submit.disabled = false;
  }
}

// ---- conversation browser ------------------------------------------------------------------

const browser = { channel: "", selected: null, listSignature: "", threadSignature: "" };

/** Conversation keys start with the chat kind ("direct:…", "group:…"), then platform ids. */
function conversationTitle(conversation) {
  return CHAT_KINDS[conversation.key.split(":")[0]] ?? conversation.key;
}

function renderChannelFilter(ids) {
  const select = $("#conversation-channel");
  const listed = [...select.options].slice(1).map((option) => option.value);
  if (listed.join("\n") === ids.join("\n")) return;
  if (!ids.includes(browser.channel)) browser.channel = "";
  select.replaceChildren(el("option", { value: "" }, "All channels"), ...options(ids));
  select.value = browser.channel;
}

function showThreadPlaceholder(text) {
  browser.threadSignature = "";
  $("#thread").replaceChildren(el("p", { class: "empty" }, text));
}

async function refreshConversations() {
  const query = new URLSearchParams({ limit: "50" });
  if (browser.channel) query.set("channel", browser.channel);
  const { conversations } = await api("GET", `/conversations?${query}`);
  renderConversationList(conversations);
  if (browser.selected) await refreshThread();
}

function renderConversationList(conversations) {
  const keys = conversations.map((c) => [c.id, c.last_activity_at, c.user?.name, c.user?.email]);
  const signature = JSON.stringify([keys, browser.selected?.id]);
  if (signature === browser.listSignature) return;
  browser.listSignature = signature;
  const list = $("#conversation-list");
  if (!conversations.length) {
    list.replaceChildren(el("li", { class: "empty" }, "No conversations yet."));
    return;
  }
  list.replaceChildren(
    ...conversations.map((c) => {
      const when = el("time", { class: "conv-time" });
      setTime(when, c.last_activity_at, true);
      const title = conversationTitle(c);
      const channel = browser.channel ? null : el("span", { class: "badge" }, c.channel_id);
      const item = el(
        "button",
        {
          type: "button",
          class: "conversation",
          "data-conversation-id": c.id,
          "aria-pressed": String(c.id === browser.selected?.id),
          onclick: () => selectConversation(c),
        },
        el("span", { class: "conv-top" }, el("span", { class: "conv-title" }, title), when),
        el("span", { class: "conv-person" }, personText(c.user, c.user_id)),
        el("span", { class: "conv-key" }, channel, " ", c.key),
      );
      return el("li", {}, item);
    }),
  );
}

function selectConversation(conversation) {
  browser.selected = conversation;
  browser.threadSignature = "";
  browser.listSignature = ""; // redraw the pressed state
  refresh();
}

function renderMessage(message) {
  const when = el("time");
  setTime(when, message.created_at, false);
  const who = { user: "User", assistant: "Assistant" }[message.role] ?? message.role;
  // a voice call's turns sit inline with the typed ones: one conversation across both
  const voice = message.source === "voice";
  const marks = [
    voice ? el("span", { class: "turn-mark", title: "Spoken in a voice call" }, "voice") : null,
    message.interrupted
      ? el("span", { class: "turn-mark", title: "The caller cut this answer short" }, "interrupted")
      : null,
  ].filter(Boolean);
  return el(
    "li",
    { class: "message", "data-role": message.role, "data-source": voice ? "voice" : "text" },
    el("span", { class: "message-meta" }, who, " · ", when, marks.length ? " · " : null, marks),
    el("div", { class: "bubble" }, message.content),
  );
}

async function refreshThread() {
  const conversation = browser.selected;
  let messages;
  try {
    const path = `/conversations/${encodeURIComponent(conversation.id)}/messages`;
    ({ messages } = await api("GET", path));
  } catch (error) {
    if (error.status !== 404) throw error;
    browser.selected = null;
    showThreadPlaceholder("That conversation no longer exists.");
    return;
  }
  // Redrawn only when a message arrives, so reading and selecting text are not disturbed.
  // a retried voice round or an interruption rewrites a turn in place: its length counts too
  const turns = messages.map((m) => [m.id, m.content.length, m.interrupted ? 1 : 0]);
  const signature = JSON.stringify([conversation.id, turns]);
  if (signature === browser.threadSignature) return;
  browser.threadSignature = signature;
  const thread = $("#thread");
  const atBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 24;
  const started = el("time");
  setTime(started, conversation.created_at, false);
  const userId = conversation.user?.id ?? conversation.user_id;
  const person = userId
    ? el(
        "button",
        {
          type: "button",
          class: "btn btn-small btn-quiet person-link",
          title: "Show this person in Users",
          onclick: () => showPerson(userId),
        },
        personText(conversation.user, conversation.user_id),
      )
    : null;
  thread.replaceChildren(
    el(
      "div",
      { class: "thread-head" },
      el("strong", {}, conversationTitle(conversation)),
      el("span", { class: "badge" }, conversation.channel_id),
      el("code", { class: "thread-key", title: "conversation key" }, conversation.key),
      person,
      el("span", { class: "sub" }, "started ", started),
    ),
    messages.length
      ? el("ol", { class: "messages" }, messages.map(renderMessage))
      : el("p", { class: "empty" }, "No messages."),
  );
  if (atBottom) thread.scrollTop = thread.scrollHeight;
}

// ---- users: who writes, on which platforms; link, unlink, block -----------------------------

const people = {
  search: "",
  selected: null,
  listSignature: "",
  detailSignature: "",
  conversationsSignature: "",
};
const PERSON_CONVERSATIONS = 20; // the latest ones; the browser's channel filter shows more
const SOURCES = { auto: "created on first contact", file: "users file", http: "HTTP directory", ldap: "LDAP" };

/** "Name <e-mail>", else whichever is known, else the opaque id. */
function personText(user, fallbackId) {
  const name = user?.name?.trim();
  const email = user?.email;
  if (name && email) return `${name} <${email}>`;
  return name || email || `user ${user?.id ?? fallbackId ?? "?"}`;
}

async function refreshUsers() {
  const query = new URLSearchParams({ limit: "50" });
  if (people.search) query.set("search", people.search);
  const { users } = await api("GET", `/users?${query}`);
  renderUserList(users);
  if (people.selected) await refreshPerson();
}

function renderUserList(users) {
  const keys = users.map((u) => [u.id, u.name, u.email, u.blocked, u.last_seen_at]);
  const signature = JSON.stringify([keys, people.selected, people.search]);
  if (signature === people.listSignature) return;
  people.listSignature = signature;
  $("#user-count").textContent = users.length ? String(users.length) : "";
  const list = $("#user-list");
  if (!users.length) {
    const text = people.search ? "Nobody matches." : "Nobody has written yet.";
    list.replaceChildren(el("li", { class: "empty" }, text));
    return;
  }
  list.replaceChildren(
    ...users.map((u) => {
      const seen = el("time", { class: "conv-time" });
      setTime(seen, u.last_seen_at ?? u.created_at, true);
      const blocked = u.blocked ? el("span", { class: "badge badge-blocked" }, "blocked") : null;
      const item = el(
        "button",
        {
          type: "button",
          class: "person-item",
          "data-user-id": u.id,
          "data-blocked": String(Boolean(u.blocked)),
          "aria-pressed": String(u.id === people.selected),
          onclick: () => selectUser(u.id),
        },
        el(
          "span",
          { class: "conv-top" },
          el("span", { class: "conv-title" }, u.name || u.email || u.id),
          seen,
        ),
        el("span", { class: "conv-key" }, blocked, blocked ? " " : null, u.email ?? "no e-mail"),
      );
      return el("li", {}, item);
    }),
  );
}

function selectUser(id) {
  people.selected = id;
  people.detailSignature = "";
  people.listSignature = ""; // redraw the pressed state
  refresh();
}

/** From a conversation: the person in the Users view, found by id whatever the search. */
function showPerson(id) {
  if (people.search) {
    people.search = "";
    $("#user-search").value = "";
  }
  selectUser(id);
  $("#users-title").scrollIntoView({ behavior: "smooth", block: "start" });
}

function showPersonPlaceholder(text) {
  people.detailSignature = "";
  $("#person").replaceChildren(el("p", { class: "empty" }, text));
}

async function refreshPerson() {
  let user;
  let conversations;
  try {
    user = await api("GET", `/users/${encodeURIComponent(people.selected)}`);
    const query = new URLSearchParams({ user: user.id, limit: String(PERSON_CONVERSATIONS) });
    ({ conversations } = await api("GET", `/conversations?${query}`));
  } catch (error) {
    if (error.status !== 404) throw error;
    people.selected = null;
    showPersonPlaceholder("That person no longer exists.");
    return;
  }
  // redrawn only when something changed: a half-typed identity id survives the polls, and a
  // person who keeps writing redraws only their conversations
  const signature = JSON.stringify(user);
  if (signature !== people.detailSignature) {
    people.detailSignature = signature;
    people.conversationsSignature = "";
    renderPerson(user);
  }
  renderPersonConversations(conversations);
}

/** The person's conversations, newest activity first; a click opens one in the browser. */
function renderPersonConversations(conversations) {
  const keys = conversations.map((c) => [c.id, c.last_activity_at]);
  const signature = JSON.stringify([keys, browser.selected?.id]);
  if (signature === people.conversationsSignature) return;
  people.conversationsSignature = signature;
  const list = $("#person-conversations");
  if (!conversations.length) {
    list.replaceChildren(
      el(
        "li",
        { class: "empty" },
        "No conversations yet. An account linked to this person later keeps its earlier " +
          "conversations with the person it had then.",
      ),
    );
    return;
  }
  list.replaceChildren(
    ...conversations.map((c) => {
      const when = el("time", { class: "conv-time" });
      setTime(when, c.last_activity_at, true);
      const item = el(
        "button",
        {
          type: "button",
          class: "conversation",
          "data-conversation-id": c.id,
          "aria-pressed": String(c.id === browser.selected?.id),
          title: "Read this conversation",
          onclick: () => openConversation(c),
        },
        el(
          "span",
          { class: "conv-top" },
          el("span", { class: "conv-title" }, conversationTitle(c)),
          when,
        ),
        el("span", { class: "conv-key" }, el("span", { class: "badge" }, c.channel_id), " ", c.key),
      );
      return el("li", {}, item);
    }),
  );
}

/** From a person: their conversation in the browser (all channels if another was chosen). */
function openConversation(conversation) {
  if (browser.channel && browser.channel !== conversation.channel_id) {
    browser.channel = "";
    $("#conversation-channel").value = "";
  }
  selectConversation(conversation);
  $("#conversations-title").scrollIntoView({ behavior: "smooth", block: "start" });
}

function fact(label, value) {
  return [el("dt", {}, label), el("dd", {}, value)];
}

function renderPerson(user) {
  const path = `/users/${encodeURIComponent(user.id)}`;
  const seen = el("time");
  setTime(seen, user.last_seen_at, false);
  const created = el("time");
  setTime(created, user.created_at, false);
  const source = SOURCES[user.auth_source] ?? user.auth_source;
  const block = user.blocked
    ? button("Unblock", () => personAction(`${path}/unblock`, `${personText(user)} unblocked`))
    : button(
        "Block",
        () => personAction(`${path}/block`, `${personText(user)} blocked`),
        "btn-danger-quiet",
      );
  block.id = "person-block";
  const facts = el(
    "dl",
    { class: "facts" },
    fact("E-mail", user.email ?? "—"),
    fact("Groups", user.groups.length ? user.groups.join(", ") : "—"),
    fact("Source", source),
    fact("Directory id", user.directory_id ?? "—"),
    fact("Last seen", seen),
    fact("First seen", created),
    fact("User id", el("code", {}, user.id)),
  );
  const identities = user.identities.length
    ? el(
        "table",
        { class: "channels identities" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Id", "Platform", "Tenant", "Platform user id", "Name there", ""].map((h) =>
              el("th", { scope: "col" }, h),
            ),
          ),
        ),
        el(
          "tbody",
          {},
          user.identities.map((i) =>
            el(
              "tr",
              { "data-identity-id": String(i.id) },
              el("td", { class: "num" }, String(i.id)),
              el("td", {}, i.platform),
              el("td", {}, el("code", {}, i.tenant || "—")),
              el("td", {}, el("code", {}, i.platform_user_id)),
              el("td", {}, i.display_name || "—"),
              el(
                "td",
                {},
                button("Unlink", () => unlinkIdentity(user, i), "btn-quiet"),
              ),
            ),
          ),
        ),
      )
    : el("p", { class: "empty" }, "No identities: every platform account went to another user.");
  const input = el("input", {
    id: "link-identity",
    type: "text",
    inputmode: "numeric",
    pattern: "[0-9]+",
    placeholder: "identity id",
    autocomplete: "off",
    "aria-label": "Identity id to link",
  });
  const link = el(
    "form",
    {
      class: "link-form",
      onsubmit: (event) => {
        event.preventDefault();
        linkIdentity(user, input);
      },
    },
    input,
    el("button", { type: "submit", class: "btn btn-small" }, "Link identity"),
    el(
      "span",
      { class: "field-hint" },
      "An identity's id is shown beside it on its current person.",
    ),
  );
  $("#person").replaceChildren(
    el(
      "div",
      { class: "thread-head" },
      el("strong", { id: "person-name" }, user.name || user.email || user.id),
      user.blocked ? el("span", { class: "badge badge-blocked" }, "blocked") : null,
      el("span", { class: "badge" }, user.auth_source),
      el("span", { class: "sub" }, block),
    ),
    facts,
    el("h3", { class: "person-section" }, "Conversations"),
    el("ul", {
      id: "person-conversations",
      class: "person-conversations",
      "aria-label": "Conversations of this person",
    }),
    el("h3", { class: "person-section" }, "Identities"),
    identities,
    link,
  );
}

async function personAction(path, done, body) {
  try {
    const answer = await api("POST", path, body);
    toast(done);
    people.listSignature = "";
    people.detailSignature = "";
    hurry();
    return answer;
  } catch (error) {
    if (error.status !== 401) toast(error.message, "error");
    return null;
  }
}

async function linkIdentity(user, input) {
  const text = input.value.trim();
  if (!/^[0-9]+$/.test(text)) {
    toast("An identity id is a number (see the identities of the person it belongs to).", "error");
    return;
  }
  const path = `/users/${encodeURIComponent(user.id)}/identities`;
  const body = { identity_id: Number(text) };
  if (await personAction(path, `Identity ${text} linked to ${personText(user)}`, body)) {
    input.value = "";
  }
}

async function unlinkIdentity(user, identity) {
  const path = `/users/${encodeURIComponent(user.id)}/identities/${identity.id}`;
  try {
    const moved = await api("DELETE", path);
    toast(`${identity.platform} ${identity.platform_user_id} is now user ${moved.user_id}`);
    people.listSignature = "";
    people.detailSignature = "";
    hurry();
  } catch (error) {
    if (error.status !== 401) toast(error.message, "error");
  }
}

// ---- toasts and start-up -------------------------------------------------------------------

function toast(message, kind = "info") {
  const role = kind === "error" ? "alert" : "status";
  const node = el("div", { class: `toast toast-${kind}`, role }, message);
  node.addEventListener("click", () => node.remove());
  $("#toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
}

function start() {
  setupToken();
  $("#new-channel").addEventListener("click", () => openChannelForm(null));
  $("#channel-form").addEventListener("submit", submitChannelForm);
  $("#channel-dialog [data-close]").addEventListener("click", () => $("#channel-dialog").close());
  $("#conversation-channel").addEventListener("change", (event) => {
    browser.channel = event.target.value;
    browser.selected = null;
    browser.listSignature = "";
    showThreadPlaceholder("Select a conversation to read its messages.");
    refresh();
  });
  let searchTimer = null;
  $("#user-search").addEventListener("input", (event) => {
    // one request once typing pauses, not one per key
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      people.search = event.target.value.trim();
      people.listSignature = "";
      refresh();
    }, 250);
  });
  refresh();
}

start();

// The backends table (filtered in the page) and one backend's page with its live status history.
import { call } from "./api.js";
import { ago, el } from "./dom.js";
import { follow } from "./sse.js";

const $ = (id) => document.getElementById(id);
const FIELDS = ["key", "template", "region", "node", "status", "fencing_token"];

export class BackendTable {
  constructor() {
    this.rows = [];
    for (const id of ["filter-key", "filter-region", "filter-status"]) {
      $(id).addEventListener("input", () => this.render());
    }
    $("backend-filters").addEventListener("submit", (event) => event.preventDefault());
    setInterval(() => this.refreshAges(), 1000);
  }

  update(backends) {
    this.rows = backends;
    this.render();
  }

  setRegions(names) {
    const select = $("filter-region");
    const current = [...select.options].slice(1).map((o) => o.value);
    if (current.join() === names.join()) return;
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { text: n })));
    select.value = names.includes(chosen) ? chosen : "";
  }

  filtered() {
    const key = $("filter-key").value.trim();
    const region = $("filter-region").value;
    const status = $("filter-status").value;
    return this.rows.filter(
      (b) =>
        (!key || (b.key ?? "").includes(key)) && (!region || b.region === region) && (!status || b.status === status),
    );
  }

  render() {
    const shown = this.filtered();
    $("backend-table").tBodies[0].replaceChildren(
      ...shown.map((b) =>
        el(
          "tr",
          { "data-backend": b.id },
          el("td", {}, el("a", { href: `#/backends/${encodeURIComponent(b.id)}`, text: b.key ?? `(no key) ${b.id}` })),
          ...FIELDS.slice(1).map((f) => el("td", { class: f === "status" ? `status-${b.status}` : null, text: b[f] })),
          el("td", { class: "age", "data-since": b.created_at, text: ago(b.created_at) }),
        ),
      ),
    );
    $("backend-count").textContent = `${shown.length} of ${this.rows.length} most recent backends shown`;
  }

  refreshAges() {
    for (const cell of document.querySelectorAll("#backend-table td.age")) {
      cell.textContent = ago(cell.dataset.since);
    }
  }
}

export class BackendPage {
  constructor({ onAuthError }) {
    this.onAuthError = onAuthError;
    this.stop = null;
    this.id = null;
    $("terminate").addEventListener("click", () => this.confirmTerminate());
    $("confirm-dialog").addEventListener("close", () => {
      if ($("confirm-dialog").returnValue === "terminate") this.terminate($("confirm-hard").checked);
    });
  }

  async open(id) {
    this.close();
    this.id = id;
    $("backend-title").textContent = `Backend ${id}`;
    $("backend-error").textContent = "";
    $("history").replaceChildren();
    $("backend-details").replaceChildren();
    try {
      this.show(await call("GET", `/v1/backends/${encodeURIComponent(id)}`));
    } catch (error) {
      this.fail(error);
      return;
    }
    this.stop = follow(`/v1/backends/${encodeURIComponent(id)}/events`, {
      onEvent: (e) => this.event(JSON.parse(e.data)),
      onError: (error) => this.fail(error),
      isFatal: (error) => error.status >= 400 && error.status < 500,
    });
    $("backend-title").focus?.();
  }

  close() {
    this.stop?.();
    this.stop = null;
    this.id = null;
  }

  show(backend) {
    this.backend = backend;
    const items = [
      ["key", backend.key ?? "(none)"], ["template", backend.template], ["region", backend.region],
      ["node", backend.node], ["status", backend.status], ["fencing token", backend.fencing_token],
      ["created", backend.created_at], ["status changed", backend.status_changed_at],
      ["termination reason", backend.termination_reason], ["exit code", backend.exit_code],
    ];
    $("backend-details").replaceChildren(
      ...items
        .filter(([, v]) => v !== null && v !== undefined)
        .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: v })]),
    );
    $("terminate").disabled = backend.status === "terminated";
  }

  event(e) {
    $("history").append(
      el("li", { "data-status": e.status }, el("time", { datetime: e.at, text: e.at }), ` ${e.status}`,
        e.reason ? ` (${e.reason})` : ""),
    );
    if (this.backend) this.show({ ...this.backend, status: e.status, status_changed_at: e.at,
      termination_reason: e.reason ?? this.backend.termination_reason });
    if (e.status === "terminated") this.close();  // the stream ends there; nothing follows
  }

  confirmTerminate() {
    $("confirm-text").textContent =
      `Backend ${this.id} (key ${this.backend?.key ?? "none"}) will be drained and stopped; its key becomes free.`;
    $("confirm-hard").checked = false;
    $("confirm-dialog").returnValue = "";
    $("confirm-dialog").showModal();
  }

  async terminate(hard) {
    $("backend-error").textContent = "";
    try {
      this.show(await call("POST", `/v1/backends/${encodeURIComponent(this.id)}/terminate`, { hard }));
    } catch (error) {
      $("backend-error").textContent =
        error.status === 403 ? "Only an admin token may terminate backends (this one is read-only)." : error.message;
    }
  }

  fail(error) {
    if (error.isAuth && error.status === 401) {
      this.onAuthError(error);
      return;
    }
    $("backend-error").textContent =
      error.status === 404 ? "No such backend." : error.explanation ?? String(error.message ?? error);
  }
}

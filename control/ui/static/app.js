// The dashboard: sign in once, then follow the fleet stream and draw it; hash routes for backend pages.
import { ApiError, call, forgetToken, setToken, token } from "./api.js";
import { BackendPage, BackendTable } from "./backends.js";
import { el } from "./dom.js";
import { HEALTH_TEXT, health, lag, load } from "./fleet.js";
import { WorldMap } from "./map.js";
import { follow } from "./sse.js";

performance.mark("app-start"); // every module is loaded and this one runs
const $ = (id) => document.getElementById(id);

const map = new WorldMap({ onPick: (lat, lon) => preview(lat, lon) });
const table = new BackendTable();
const page = new BackendPage({ onAuthError: (error) => askToken(error.explanation) });
let stopFleet = null;
let rendered = false;
const landDrawn = map.loadLand().then(() => performance.mark("land-drawn"));

function status(text) {
  $("status").textContent = text;
}

function askToken(message = "") {
  stopFleet?.();
  stopFleet = null;
  $("token-error").textContent = message;
  $("token-input").value = "";
  if (!$("token-dialog").open) $("token-dialog").showModal();
  $("token-input").focus();
}

$("token-form").addEventListener("submit", () => {
  const value = $("token-input").value.trim();
  if (!value) return;
  setToken(value);
  start();
});
$("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
$("change-token").addEventListener("click", () => {
  forgetToken();
  askToken();
});

function start() {
  stopFleet?.();
  status("connecting…");
  stopFleet = follow("/v1/fleet/events", {
    onOpen: () => {
      performance.mark("stream-open");
      status("live");
    },
    onEvent: (e) => {
      const data = JSON.parse(e.data);
      if (e.event === "regions") showRegions(data);
      else if (e.event === "backends") table.update(data.backends);
      else if (e.event === "unavailable") status(`stale: ${data.message}…`);
    },
    onError: (error) => {
      if (error instanceof ApiError && error.isAuth) {
        forgetToken();
        askToken(error.explanation);
      } else {
        status(`disconnected (${error.message}); retrying…`);
      }
    },
    isFatal: (error) => error instanceof ApiError && error.isAuth,
  });
  route();
}

function showRegions({ version, regions }) {
  map.update(regions, version);
  table.setRegions(regions.map((r) => r.name));
  $("region-table").tBodies[0].replaceChildren(
    ...regions.map((r) => {
      const { running, capacity } = load(r);
      const behind = lag(r, version);
      return el(
        "tr",
        { "data-region": r.name },
        el("td", { text: r.name }),
        el("td", { text: HEALTH_TEXT[health(r)] }),
        el("td", { text: `${running}/${capacity}` }),
        el("td", { text: behind === null ? "no nodes" : String(behind) }),
      );
    }),
  );
  status(`live · system version ${version}`);
  if (!rendered) {
    rendered = true;
    performance.mark("first-regions");
    // First render: the continents and the regions' markers are both on the map.
    landDrawn.then(() => {
      document.body.dataset.rendered = String(performance.now());
    });
  }
}

async function preview(lat, lon) {
  $("preview-lat").value = lat.toFixed(2);
  $("preview-lon").value = lon.toFixed(2);
  const result = $("preview-result");
  try {
    const answer = await call("POST", "/v1/placement/preview", { location: { lat, lon } });
    map.drawPreview(answer);
    result.replaceChildren(
      el(
        "p",
        { id: "preview-answer" },
        "A user at ",
        el("strong", { text: `${lat.toFixed(2)}, ${lon.toFixed(2)}` }),
        " lands in ",
        el("strong", { id: "preview-region", text: answer.region }),
        " — reason ",
        el("code", { id: "preview-reason", text: answer.reason }),
        answer.distance_km === null ? "" : `, ${answer.distance_km} km away.`,
      ),
      rankingTable(answer),
    );
  } catch (error) {
    map.drawPreview({ ranking: [] });
    const text = error instanceof ApiError ? error.explanation : String(error);
    result.replaceChildren(el("p", { class: "error", role: "alert", text }));
    if (error instanceof ApiError && error.status === 401) askToken(text);
  }
}

function rankingTable(answer) {
  const why = (row) => {
    if (row.name === answer.region) return "chosen";
    if (!row.eligible) return `not chosen: ${row.why_not}`;
    const more = row.distance_km - (answer.distance_km ?? 0);
    if (answer.distance_km !== null && more > 0.5) return `not chosen: ${Math.round(more)} km farther`;
    return "not chosen: as near, but busier";
  };
  return el(
    "table",
    { id: "ranking", class: "compact" },
    el("caption", { text: "Ranking (nearest first)" }),
    el("thead", {}, el("tr", {}, ...["region", "distance", "load", "why"].map((h) => el("th", { scope: "col", text: h })))),
    el(
      "tbody",
      {},
      ...answer.ranking.map((row) =>
        el(
          "tr",
          { class: row.name === answer.region ? "chosen" : null, "data-region": row.name },
          el("td", { text: row.name }),
          el("td", { text: row.distance_km === null ? "–" : `${row.distance_km} km` }),
          el("td", { text: `${Math.round(row.load * 100)}%` }),
          el("td", { text: why(row) }),
        ),
      ),
    ),
  );
}

$("preview-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const lat = Number($("preview-lat").value);
  const lon = Number($("preview-lon").value);
  if (Number.isFinite(lat) && Number.isFinite(lon)) preview(lat, lon);
});

function route() {
  const match = /^#\/backends\/(bk-[A-Za-z0-9_-]{1,60})$/.exec(location.hash);
  $("fleet-view").hidden = Boolean(match);
  $("backend-view").hidden = !match;
  if (match) page.open(match[1]);
  else page.close();
}

window.addEventListener("hashchange", route);
if (token()) start();
else askToken();

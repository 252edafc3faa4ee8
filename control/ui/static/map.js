// The world map: land, one marker per region, a popup with the region's nodes, and placement answers.
import { ago, el, svg, table } from "./dom.js";
import { HEALTH_TEXT, health, lag, load } from "./fleet.js";
import { HEIGHT, WIDTH, invert, project } from "./projection.js";

const $ = (id) => document.getElementById(id);

export class WorldMap {
  constructor({ onPick }) {
    this.svg = $("map");
    this.markers = $("markers");
    this.popup = $("popup");
    this.previewLayer = $("preview-layer");
    this.regions = new Map();
    this.version = 0;
    this.popupFor = null;
    this.drawGraticule();
    this.onPick = onPick;
    this.svg.addEventListener("click", (event) => {
      const [lat, lon] = this.pointAt(event.clientX, event.clientY);
      onPick(lat, lon);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.hidePopup();
    });
  }

  async loadLand() {
    const response = await fetch("/ui/land.json");
    const land = await response.json();
    $("land").setAttribute("d", land.d);
  }

  drawGraticule() {
    const g = $("graticule");
    for (let lon = -150; lon <= 150; lon += 30) {
      const [x] = project(0, lon);
      g.append(svg("line", { x1: x, y1: 0, x2: x, y2: HEIGHT }));
    }
    for (let lat = -60; lat <= 60; lat += 30) {
      const [, y] = project(lat, 0);
      g.append(svg("line", { x1: 0, y1: y, x2: WIDTH, y2: y }));
    }
  }

  // (lat, lon) under a point of the screen.
  pointAt(clientX, clientY) {
    const box = this.svg.getBoundingClientRect();
    return invert(((clientX - box.left) / box.width) * WIDTH, ((clientY - box.top) / box.height) * HEIGHT);
  }

  update(regions, version) {
    this.version = version;
    const seen = new Set();
    for (const region of regions) {
      seen.add(region.name);
      let marker = this.regions.get(region.name);
      if (!marker) {
        marker = this.createMarker(region.name);
        this.regions.set(region.name, marker);
      }
      marker.region = region;
      this.paintMarker(marker);
    }
    for (const [name, marker] of this.regions) {
      if (!seen.has(name)) {
        marker.node.remove();
        this.regions.delete(name);
      }
    }
    if (this.popupFor && this.regions.has(this.popupFor)) this.showPopup(this.popupFor);
    else if (this.popupFor) this.hidePopup();
  }

  createMarker(name) {
    const node = svg("g", { class: "marker", tabindex: 0, role: "button", "data-region": name });
    const parts = {
      ring: svg("circle", { class: "ring", r: 11 }),
      core: svg("circle", { class: "core", r: 8 }),
      arc: svg("path", { class: "load-arc" }),
      label: svg("text", { x: 14, y: -6 }),
      detail: svg("text", { class: "detail", x: 14, y: 10 }),
    };
    node.append(parts.ring, parts.core, parts.arc, parts.label, parts.detail);
    const show = () => this.showPopup(name);
    node.addEventListener("mouseenter", show);
    node.addEventListener("focus", show);
    node.addEventListener("mouseleave", () => this.hidePopup(name));
    node.addEventListener("blur", () => this.hidePopup(name));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        const { region } = this.regions.get(name);
        this.onPick(region.lat, region.lon);
      }
    });
    this.markers.append(node);
    return { node, ...parts };
  }

  paintMarker(marker) {
    const { region } = marker;
    const [x, y] = project(region.lat, region.lon);
    const state = health(region);
    const { running, capacity } = load(region);
    const behind = lag(region, this.version);
    marker.node.setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
    marker.node.dataset.x = x.toFixed(1);
    marker.node.dataset.y = y.toFixed(1);
    marker.node.dataset.health = state;
    marker.core.setAttribute("class", `core ${state}`);
    marker.arc.setAttribute("d", loadArc(capacity ? running / capacity : 0, 11));
    marker.label.textContent = region.name;
    const draining = region.nodes.filter((n) => n.draining).length;
    marker.detail.textContent =
      `${running}/${capacity}${behind ? `  lag ${behind}` : ""}${draining ? `  ${draining} draining` : ""}`;
    marker.detail.setAttribute("class", behind ? "detail lag" : "detail");
    const lagText = behind === null ? "no nodes" : `sync lag ${behind} versions`;
    marker.node.setAttribute(
      "aria-label",
      `${region.name}: ${HEALTH_TEXT[state]}, ${running} of ${capacity} backends running, ${lagText}` +
        (draining ? `, ${draining} node${draining > 1 ? "s" : ""} draining` : ""),
    );
    // Labels of markers near the right edge go to their left, so they stay on the map.
    const anchorEnd = x > WIDTH - 130;
    for (const text of [marker.label, marker.detail]) {
      text.setAttribute("x", anchorEnd ? -14 : 14);
      text.setAttribute("text-anchor", anchorEnd ? "end" : "start");
    }
  }

  showPopup(name) {
    const marker = this.regions.get(name);
    if (!marker) return;
    this.popupFor = name;
    const { region } = marker;
    const { running, capacity } = load(region);
    const behind = lag(region, this.version);
    const rows = region.nodes.map((n) => [
      n.id,
      n.healthy ? "yes" : "no",
      String(n.backends),
      String(n.capacity),
      String(n.applied_version),
      ago(n.last_heartbeat_at),
      n.draining ? "yes" : "no",
    ]);
    this.popup.replaceChildren(
      el("h3", { text: region.name }),
      el("p", {
        text: `${HEALTH_TEXT[health(region)]} · ${running}/${capacity} running · ` +
          (behind === null ? "no nodes" : `sync lag ${behind}`),
      }),
      rows.length
        ? table(["node", "healthy", "backends", "capacity", "applied version", "last heartbeat", "draining"], rows)
        : el("p", { text: "No edge node has reported in this region." }),
    );
    this.popup.hidden = false;
    this.placePopup(marker.node);
  }

  placePopup(anchor) {
    const wrap = this.popup.parentElement.getBoundingClientRect();
    const at = anchor.getBoundingClientRect();
    const width = this.popup.offsetWidth;
    let left = at.left - wrap.left + at.width + 6;
    if (left + width > wrap.width) left = Math.max(0, at.left - wrap.left - width - 6);
    let top = at.top - wrap.top;
    if (top + this.popup.offsetHeight > wrap.height) top = Math.max(0, wrap.height - this.popup.offsetHeight);
    this.popup.style.left = `${left}px`;
    this.popup.style.top = `${top}px`;
  }

  hidePopup(name) {
    if (name !== undefined && name !== this.popupFor) return;
    this.popupFor = null;
    this.popup.hidden = true;
  }

  // Draw a placement answer: the user's spot, a line to the chosen region, faint lines to the others.
  drawPreview(answer) {
    const layer = this.previewLayer;
    layer.replaceChildren();
    if (!answer.origin) return;
    const [ox, oy] = project(answer.origin.lat, answer.origin.lon);
    for (const row of answer.ranking) {
      const target = this.regions.get(row.name)?.region;
      if (!target) continue;
      const [tx, ty] = project(target.lat, target.lon);
      const chosen = row.name === answer.region;
      layer.append(
        svg("line", {
          class: chosen ? "preview-line" : "preview-other",
          x1: ox, y1: oy, x2: tx, y2: ty,
          "data-region": row.name,
        }),
      );
    }
    layer.append(svg("circle", { class: "preview-origin", cx: ox, cy: oy, r: 6 }));
  }
}

// An arc around the marker, clockwise from the top, for the share of capacity in use.
function loadArc(share, r) {
  const s = Math.min(Math.max(share, 0), 0.9999);
  if (s <= 0) return "";
  const angle = s * 2 * Math.PI;
  const x = r * Math.sin(angle);
  const y = -r * Math.cos(angle);
  return `M0 ${-r}A${r} ${r} 0 ${s > 0.5 ? 1 : 0} 1 ${x.toFixed(2)} ${y.toFixed(2)}`;
}

// What the dashboard derives from the fleet stream: per-region health, load and sync lag.

export function health(region) {
  const healthy = region.nodes.filter((n) => n.healthy).length;
  if (region.nodes.length && healthy === region.nodes.length) return "all";
  return healthy ? "some" : "none";
}

export function load(region) {
  const running = region.nodes.reduce((sum, n) => sum + n.backends, 0);
  let capacity = region.nodes.filter((n) => n.healthy).reduce((sum, n) => sum + n.capacity, 0);
  if (region.capacity !== null && region.capacity !== undefined) capacity = Math.min(capacity, region.capacity);
  return { running, capacity };
}

// System version minus the slowest node's applied version (null without nodes).
export function lag(region, version) {
  if (!region.nodes.length) return null;
  return Math.max(0, version - Math.min(...region.nodes.map((n) => n.applied_version)));
}

export const HEALTH_TEXT = { all: "all nodes healthy", some: "some nodes healthy", none: "no healthy node" };

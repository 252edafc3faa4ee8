// Equirectangular projection onto the map's 1000 x 500 plane: the formula of control/ui/projection.py,
// which pre-projected land.json, so markers sit on the continents.
export const WIDTH = 1000;
export const HEIGHT = 500;

export function project(lat, lon) {
  if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180)) {
    throw new RangeError(`(${lat}, ${lon}) is not a point on Earth`);
  }
  return [((lon + 180) / 360) * WIDTH, ((90 - lat) / 180) * HEIGHT];
}

export function invert(x, y) {
  const cx = Math.min(Math.max(x, 0), WIDTH);
  const cy = Math.min(Math.max(y, 0), HEIGHT);
  return [90 - (cy / HEIGHT) * 180, (cx / WIDTH) * 360 - 180];
}

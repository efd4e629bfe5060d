/**
 * A small SVG line chart per measure, against the number of MetricMappings on a log axis:
 * how Governor's cost grows (bench/growth.ts writes it next to latest.md;
 * docs/performance.md shows it). No dependency: a few lines and labels.
 */

/** One size's figures. */
export interface GrowthPoint {
  mappings: number;
  rssMB: number;
  cpuPercent: number;
  readyS: number;
  discoveryP99Ms: number;
  /** Loaded → discovery lists every one (not charted). */
  servedS?: number;
  /** A fresh Governor over them (statuses already written) → discovery lists every one; a string says why not (not charted). */
  restartS?: number | string;
}

const MEASURES: { key: keyof Omit<GrowthPoint, "mappings" | "servedS" | "restartS">; title: string }[] = [
  { key: "rssMB", title: "RSS, MB" },
  { key: "cpuPercent", title: "CPU idle, % of a core" },
  { key: "readyS", title: "loaded → all Ready, s" },
  { key: "discoveryP99Ms", title: "discovery p99, ms" },
];

const W = 260;
const H = 180;
const PAD = { left: 44, right: 12, top: 26, bottom: 30 };

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const num = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const count = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));

/** The chart of `points` (sizes ascending), titled `title`. */
export function growthSvg(points: readonly GrowthPoint[], title: string): string {
  if (points.length === 0) throw new Error("no points to plot");
  const sizes = points.map((p) => p.mappings);
  const [lo, hi] = [Math.log10(Math.min(...sizes)), Math.log10(Math.max(...sizes))];
  const x = (n: number) =>
    PAD.left + (hi === lo ? 0.5 : (Math.log10(n) - lo) / (hi - lo)) * (W - PAD.left - PAD.right);
  const panels = MEASURES.map((m, k) => {
    const values = points.map((p) => p[m.key]);
    const top = Math.max(...values.filter(Number.isFinite), 0) * 1.15 || 1;
    const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    const finite = points.filter((p) => Number.isFinite(p[m.key]));
    const path = finite.map(
      (p, i) => `${i ? "L" : "M"}${x(p.mappings).toFixed(1)},${y(p[m.key]).toFixed(1)}`,
    );
    const marks = finite.map(
      (p) =>
        `<circle cx="${x(p.mappings).toFixed(1)}" cy="${y(p[m.key]).toFixed(1)}" r="3"/>` +
        `<text x="${x(p.mappings).toFixed(1)}" y="${(y(p[m.key]) - 6).toFixed(1)}" text-anchor="middle">${num(p[m.key])}</text>`,
    );
    const ticks = sizes.map(
      (n) =>
        `<text x="${x(n).toFixed(1)}" y="${H - PAD.bottom + 14}" text-anchor="middle">${count(n)}</text>`,
    );
    return [
      `<g transform="translate(${(k % 2) * W},${30 + Math.floor(k / 2) * H})">`,
      `<text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">${esc(m.title)}</text>`,
      `<line x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}" stroke="#888"/>`,
      `<line x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${H - PAD.bottom}" stroke="#888"/>`,
      `<text x="${PAD.left - 4}" y="${PAD.top + 4}" text-anchor="end">${num(top)}</text>`,
      `<text x="${PAD.left - 4}" y="${H - PAD.bottom}" text-anchor="end">0</text>`,
      ...ticks,
      `<path d="${path.join("")}" fill="none" stroke="#1f6feb" stroke-width="2"/>`,
      `<g fill="#1f6feb">${marks.join("")}</g>`,
      `</g>`,
    ].join("\n");
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${30 + 2 * H + 16}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${W}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    ...panels,
    `<text x="${W}" y="${30 + 2 * H + 10}" text-anchor="middle" fill="#555">MetricMappings (log scale)</text>`,
    `</svg>`,
    "",
  ].join("\n");
}

/**
 * A replay (src/autoscaling/replay.ts) as an SVG a person reads at a glance: above, each
 * metric against its target as the HPA compares them (one metric in its own units; several
 * as a percentage of their targets, the target at 100 %) — a target per replica as the
 * capacity the replicas of that moment give (target × replicas); below, the replicas the
 * replay chose and, where known, the replicas the workload had. Pure; every text from the
 * cluster is escaped.
 */
import type { ReplayStep } from "../autoscaling/replay.js";

export interface ChartMetric {
  name: string;
  /** The target's value, to draw the line at. */
  target: number;
  /** An `averageValue` target of an External or Object metric: per replica. */
  perReplica?: boolean;
}

const W = 900;
const PLOT = { left: 64, right: W - 24, top: 40 };
const PANEL_H = 150;
const GAP = 46;
const COLORS = ["#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const esc = (s: string) =>
  s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!);

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** A moment as HH:MM, or HH:MM:SS over a stretch shorter than an hour. */
const clock = (ms: number, seconds: boolean) => new Date(ms).toISOString().slice(11, seconds ? 19 : 16);

/** The chart of `steps` for `metrics` (in `spec.metrics` order), titled `title`. */
export function replayChart(
  title: string,
  metrics: readonly ChartMetric[],
  steps: readonly ReplayStep[],
): string {
  const h = PLOT.top + PANEL_H * 2 + GAP + 50;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${h}" fill="white"/>`,
    `<text x="${PLOT.left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  if (steps.length === 0) return [...out, "</svg>"].join("\n");
  const t0 = steps[0]!.atMs;
  const t1 = Math.max(steps.at(-1)!.atMs, t0 + 1);
  const x = (ms: number) => PLOT.left + ((ms - t0) / (t1 - t0)) * (PLOT.right - PLOT.left);
  const ratio = metrics.length > 1;
  /** What a metric is compared with at a step: its target, times the replicas if per replica. */
  const capacity = (m: number, s: ReplayStep) =>
    (metrics[m]!.target || 1) * (metrics[m]!.perReplica ? Math.max(1, s.replicas) : 1);
  const shown = (v: number, m: number, s: ReplayStep) => (ratio ? (100 * v) / capacity(m, s) : v);
  const targetAt = (s: ReplayStep) => (ratio ? 100 : metrics[0] ? capacity(0, s) : 0);

  // Above: the metrics and their target.
  const top = PLOT.top;
  let vmax = 0;
  for (const s of steps) {
    vmax = Math.max(vmax, targetAt(s));
    for (const [m, v] of s.values.entries()) if (v !== undefined) vmax = Math.max(vmax, shown(v, m, s));
  }
  vmax = niceMax(vmax * 1.05);
  const y1 = (v: number) => top + PANEL_H - (v / vmax) * PANEL_H;
  out.push(...axes(top, vmax, ratio ? "% of target" : esc(metrics[0]?.name ?? "")));
  // The target: at 100 %, or in the metric's units (times the replicas when per replica).
  out.push(
    polyline(
      steps.map((s) => [x(s.atMs), y1(targetAt(s))]),
      "#555",
      true,
      "6 4",
    ),
    `<text x="${PLOT.right - 4}" y="${(y1(targetAt(steps.at(-1)!)) - 4).toFixed(1)}" text-anchor="end" fill="#555">${!ratio && metrics[0]?.perReplica ? "target × replicas" : "target"}</text>`,
  );
  for (const [m, metric] of metrics.entries()) {
    out.push(
      polyline(
        steps.map((s) => (s.values[m] === undefined ? undefined : [x(s.atMs), y1(shown(s.values[m], m, s))])),
        COLORS[m % COLORS.length]!,
        false,
      ),
    );
    out.push(legend(PLOT.left + 8 + m * 200, top + 14, COLORS[m % COLORS.length]!, metric.name));
  }

  // Below: the replicas.
  const low = top + PANEL_H + GAP;
  let rmax = 1;
  for (const s of steps) rmax = Math.max(rmax, s.replicas, s.actual ?? 0);
  rmax = niceMax(rmax * 1.1);
  const y2 = (v: number) => low + PANEL_H - (v / rmax) * PANEL_H;
  out.push(...axes(low, rmax, "replicas"));
  if (steps.some((s) => s.actual !== undefined)) {
    out.push(
      polyline(
        steps.map((s) => (s.actual === undefined ? undefined : [x(s.atMs), y2(s.actual)])),
        "#999",
        true,
      ),
    );
    out.push(legend(PLOT.left + 208, low + 14, "#999", "actual"));
  }
  out.push(
    polyline(
      steps.map((s) => [x(s.atMs), y2(s.replicas)]),
      "#1f77b4",
      true,
    ),
  );
  out.push(legend(PLOT.left + 8, low + 14, "#1f77b4", "replay"));

  // Time, under both.
  const axisY = low + PANEL_H + 18;
  for (let i = 0; i <= 6; i++) {
    const ms = t0 + ((t1 - t0) * i) / 6;
    const anchor = i === 0 ? "start" : i === 6 ? "end" : "middle";
    out.push(
      `<text x="${x(ms).toFixed(1)}" y="${axisY}" text-anchor="${anchor}">${clock(ms, t1 - t0 < 3_600_000)}</text>`,
    );
  }
  out.push(`<text x="${PLOT.right}" y="${axisY + 18}" text-anchor="end" fill="#555">UTC</text>`, "</svg>");
  return out.join("\n");
}

function axes(top: number, max: number, label: string): string[] {
  const out = [
    `<line x1="${PLOT.left}" x2="${PLOT.left}" y1="${top}" y2="${top + PANEL_H}" stroke="#333"/>`,
    `<line x1="${PLOT.left}" x2="${PLOT.right}" y1="${top + PANEL_H}" y2="${top + PANEL_H}" stroke="#333"/>`,
    `<text x="14" y="${top + PANEL_H / 2}" transform="rotate(-90 14 ${top + PANEL_H / 2})" text-anchor="middle">${label}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = top + PANEL_H - (PANEL_H * i) / 4;
    out.push(
      `<line x1="${PLOT.left}" x2="${PLOT.right}" y1="${y}" y2="${y}" stroke="#eee"/>`,
      `<text x="${PLOT.left - 6}" y="${y + 4}" text-anchor="end">${+v.toPrecision(3)}</text>`,
    );
  }
  return out;
}

/** A line through the points, broken where there is none; `step`: held until the next point. */
function polyline(
  points: ([number, number] | undefined)[],
  color: string,
  step: boolean,
  dashes?: string,
): string {
  const runs: string[] = [];
  let run: string[] = [];
  let last: [number, number] | undefined;
  for (const p of points) {
    if (!p) {
      if (run.length) runs.push(run.join(" "));
      run = [];
      last = undefined;
      continue;
    }
    if (step && last) run.push(`${p[0].toFixed(1)},${last[1].toFixed(1)}`);
    run.push(`${p[0].toFixed(1)},${p[1].toFixed(1)}`);
    last = p;
  }
  if (run.length) runs.push(run.join(" "));
  const dashed = dashes ? ` stroke-dasharray="${dashes}"` : "";
  return runs
    .map((r) => `<polyline points="${r}" fill="none" stroke="${color}" stroke-width="2"${dashed}/>`)
    .join("\n");
}

function legend(x: number, y: number, color: string, text: string): string {
  return `<line x1="${x}" x2="${x + 18}" y1="${y - 4}" y2="${y - 4}" stroke="${color}" stroke-width="3"/><text x="${x + 24}" y="${y}">${esc(text.slice(0, 60))}</text>`;
}

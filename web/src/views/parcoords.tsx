// Parallel coordinates for a grid of several swept values: one vertical axis per swept path
// and one for the metric, one line per grid point, coloured by the metric (brighter is better).
import { fmtNum, show } from "../format";
import type { SummaryRow } from "../types";

interface Axis {
  label: string;
  at: (row: SummaryRow) => number | null; // 0 (bottom) .. 1 (top)
  ticks: [number, string][];
}

function pathAxis(rows: SummaryRow[], path: string): Axis {
  const values: unknown[] = [];
  for (const r of rows) if (!values.some((v) => show(v) === show(r.point[path]))) values.push(r.point[path]);
  const numeric = values.every((v) => typeof v === "number");
  if (numeric) (values as number[]).sort((a, b) => a - b);
  const pos = (i: number) => (values.length === 1 ? 0.5 : i / (values.length - 1));
  return {
    label: path,
    at: (r) => pos(values.findIndex((v) => show(v) === show(r.point[path]))),
    ticks: values.map((v, i) => [pos(i), show(v)]),
  };
}

function metricAxis(rows: SummaryRow[], metric: string): Axis {
  const means = rows.map((r) => r.metrics[metric]?.mean).filter((v): v is number => typeof v === "number");
  const lo = Math.min(...means);
  const hi = Math.max(...means);
  const at = (v: number) => (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  return {
    label: `${metric} (mean)`,
    at: (r) => (r.metrics[metric] ? at(r.metrics[metric].mean) : null),
    ticks: means.length ? [[at(lo), fmtNum(lo)], [at(hi), fmtNum(hi)]] : [],
  };
}

export function ParallelCoords({ rows, paths, metric, higher }: { rows: SummaryRow[]; paths: string[]; metric: string; higher: boolean }) {
  const axes = [...paths.map((p) => pathAxis(rows, p)), metricAxis(rows, metric)];
  const W = 900;
  const H = 260;
  const top = 34;
  const bottom = 18;
  const x = (i: number) => 70 + (i * (W - 140)) / Math.max(1, axes.length - 1);
  const y = (v: number) => top + (1 - v) * (H - top - bottom);
  const score = axes[axes.length - 1];
  const colour = (r: SummaryRow) => {
    const s = score.at(r);
    if (s === null) return "var(--muted)";
    const good = higher ? s : 1 - s;
    return `hsl(${220 - 200 * good}, 70%, 45%)`;
  };
  return (
    <svg class="parcoords" id="sweep-parcoords" viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="xMidYMid meet" role="img"
      aria-label={`${metric} across ${paths.join(", ")}`}>
      {rows.map((r) => {
        const pts = axes.map((a, i) => [x(i), a.at(r)] as const).filter(([, v]) => v !== null).map(([px, v]) => `${px},${y(v!)}`);
        const label = paths.map((p) => `${p}=${show(r.point[p])}`).join(", ");
        return (
          <polyline data-point={label} points={pts.join(" ")} fill="none" stroke={colour(r)} stroke-width={2.5} opacity={0.85}>
            <title>{`${label}: ${metric} ${r.metrics[metric] ? fmtNum(r.metrics[metric].mean) : "—"}`}</title>
          </polyline>
        );
      })}
      {axes.map((a, i) => (
        <g>
          <line class="axis" x1={x(i)} x2={x(i)} y1={y(1)} y2={y(0)} />
          <text x={x(i)} y={14} text-anchor="middle" font-weight="600">{a.label}</text>
          {a.ticks.map(([v, t]) => <text x={x(i) + 6} y={y(v) + 4}>{t}</text>)}
        </g>
      ))}
    </svg>
  );
}

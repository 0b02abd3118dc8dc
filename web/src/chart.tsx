// One uPlot line chart: axis titles, EMA smoothing (raw line faint behind), log or linear y,
// a zoom shared with the page's other charts, and CSV / PNG export. The data may grow (live
// updates): the chart keeps its instance and only swaps the data, unless its shape changed.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { saveBlob } from "./api";
import { useChartViewContext, X_TITLES } from "./chartview";
import { fmtNum } from "./format";
import { cssVar, useTheme } from "./theme";
import type { MetricPoint } from "./types";

export interface Series {
  label: string;
  values: (number | null)[];
  dash?: boolean;
  color?: string;
}

/** A metric point as drawn in one series (a job's points in compare carry their job's id). */
export interface CsvRow {
  series: string;
  job?: string;
  point: MetricPoint;
}

export interface ChartData {
  x: number[];
  series: Series[];
  /** The points behind the lines, exported as they came from the API. */
  rows?: CsvRow[];
}

const AXIS_FONT = "12px system-ui, sans-serif";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22"];
export const color = (i: number) => PALETTE[i % PALETTE.length];

interface Props {
  title: string;
  data: ChartData;
  /** This chart's scale when the page leaves it to each chart ("as suited"). */
  log?: boolean;
  /** The x axis title; by default the page's x axis (epoch, step or wall time). */
  xLabel?: string;
  /** The y axis title, with its unit. */
  yLabel?: string;
  /** Category labels for x = 0, 1, 2, ... (a sweep over non-numeric values). */
  xLabels?: string[];
  /** Ticks exactly at these x values (a sweep's numeric values) instead of round steps. */
  xTicks?: number[];
  /** Index into data.x of a point to mark (the best sweep point). */
  mark?: number | null;
  /** A time series is smoothed by the page's EMA; a sweep's means are not. */
  smoothable?: boolean;
  /** Charts with the same key zoom together; by default the page's time axis. */
  zoomKey?: string;
  /** What the empty chart says (the job's status decides: queued, cancelled, failed...). */
  empty?: string;
  height?: number;
  testid?: string;
}

export function countPoints(data: ChartData): number {
  let n = 0;
  for (const s of data.series) for (const v of s.values) if (v !== null && Number.isFinite(v)) n++;
  return n;
}

/** Exponential moving average debiased as TensorBoard does: the early points are not pulled
 * toward 0. Gaps stay gaps and are skipped. */
export function ema(values: (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return values;
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return null;
    last = last * weight + (1 - weight) * v;
    n++;
    return last / (1 - weight ** n);
  });
}

const positive = (log: boolean) => (v: number | null) => (v === null || !Number.isFinite(v) || (log && v <= 0) ? null : v);

/** The arrays uPlot draws: x, the (smoothed) lines, then each raw line when smoothing. */
function drawn(data: ChartData, log: boolean, smooth: number): uPlot.AlignedData {
  const lines = data.series.map((s) => ema(s.values, smooth).map(positive(log)));
  const raw = smooth > 0 ? data.series.map((s) => s.values.map(positive(log))) : [];
  return [data.x, ...lines, ...raw];
}

const csvCell = (v: unknown) => {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/** The chart's points as CSV: one row per metric point as the API served it, or, for a chart
 * drawn from summaries (a sweep), one row per x value. */
export function toCsv(data: ChartData, xTitle: string): string {
  const lines = data.rows?.length
    ? [["series", "job_id", "seq", "phase", "layer", "epoch", "name", "value", "at"],
      ...data.rows.map(({ series, job, point: p }) => [series, job ?? "", p.seq, p.phase, p.layer, p.epoch, p.name, p.value, p.at])]
    : [[xTitle, ...data.series.map((s) => s.label)], ...data.x.map((x, i) => [x, ...data.series.map((s) => s.values[i])])];
  return lines.map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
}

const fileName = (title: string, ext: string) => `${title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "chart"}.${ext}`;

/** The canvas with a title and the series' names above it, on the page's background. */
function savePng(u: uPlot, title: string, series: Series[]): void {
  const dpr = devicePixelRatio || 1;
  const src = u.ctx.canvas;
  const pad = 10 * dpr;
  const head = 44 * dpr;
  const out = document.createElement("canvas");
  out.width = src.width + 2 * pad;
  out.height = src.height + head + pad;
  const ctx = out.getContext("2d")!;
  ctx.fillStyle = cssVar("--card") || "#fff";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.fillStyle = cssVar("--fg") || "#000";
  ctx.font = `600 ${13 * dpr}px system-ui, sans-serif`;
  ctx.fillText(title, pad, 18 * dpr);
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  let x = pad;
  series.forEach((s, i) => {
    ctx.fillStyle = s.color ?? color(i);
    ctx.fillRect(x, 29 * dpr, 14 * dpr, 3 * dpr);
    ctx.fillStyle = cssVar("--fg") || "#000";
    ctx.fillText(s.label, x + 18 * dpr, 34 * dpr);
    x += ctx.measureText(s.label).width + 32 * dpr;
  });
  ctx.drawImage(src, pad, head);
  out.toBlob((b) => b && saveBlob(b, fileName(title, "png")));
}

/** A linear y range that fits the data (as TensorBoard's), not one stretched to include 0. */
export function padded(min: number | null, max: number | null): [number, number] {
  if (min === null || max === null) return [0, 1];
  const span = max - min || Math.abs(max) * 0.1 || 1;
  return [min - span * 0.08, max + span * 0.08];
}

function withAlpha(hex: string, alpha: number): string {
  const m = /^#([0-9a-f]{6})$/i.exec(hex);
  if (!m) return hex;
  const n = parseInt(m[1], 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

export function Chart({ title, data, log: suited = false, xLabel, yLabel, xLabels, xTicks, mark = null, smoothable = true,
  zoomKey = "time", empty = "waiting for the first epoch…", height = 210, testid }: Props) {
  const view = useChartViewContext();
  const theme = useTheme();
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = useRef("");
  const n = countPoints(data);
  const log = view.y === "auto" ? suited : view.y === "log";
  const smooth = smoothable ? view.smooth : 0;
  const xTitle = xLabel ?? X_TITLES[view.x];

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const key = JSON.stringify([data.series.map((s) => [s.label, s.dash, s.color]), log, smooth > 0, xLabels, mark,
      title, xTitle, yLabel, theme, xTicks]);
    if (plot.current && shape.current === key) {
      plot.current.setData(drawn(data, log, smooth));
      view.zoom.keep(plot.current);
      return;
    }
    if (plot.current) view.zoom.leave(plot.current);
    plot.current?.destroy();
    shape.current = key;
    const width = Math.max(260, el.clientWidth || 400);
    const fg = cssVar("--fg");
    const grid = { stroke: cssVar("--grid"), width: 1 };
    const num = (_u: uPlot, vals: number[]) => vals.map((v) => fmtNum(v, 3));
    const line = (s: Series, i: number): uPlot.Series => ({
      label: s.label,
      stroke: s.color ?? color(i),
      width: 2,
      dash: s.dash ? [5, 4] : undefined,
      spanGaps: true,
      points: { show: smooth === 0, size: 5 },
      value: (_u: uPlot, v: number | null) => (v === null ? "" : fmtNum(v)),
    });
    const faint = (s: Series, i: number): uPlot.Series => ({
      label: `${s.label} (raw)`,
      stroke: withAlpha(s.color ?? color(i), 0.25),
      width: 1,
      dash: s.dash ? [5, 4] : undefined,
      spanGaps: true,
      points: { show: false },
    });
    const opts: uPlot.Options = {
      width,
      height,
      scales: { x: { time: false }, y: log ? { distr: 3 } : { range: (_u, min, max) => padded(min, max) } },
      axes: [
        {
          label: xTitle, stroke: fg, grid, ticks: grid, labelSize: 20, labelFont: AXIS_FONT,
          ...(xLabels
            ? { splits: () => xLabels.map((_, i) => i), values: (_u: uPlot, vals: number[]) => vals.map((v) => xLabels[v] ?? "") }
            : { values: num, ...(xTicks ? { splits: () => xTicks } : {}), ...(xTitle === X_TITLES.epoch || xTitle === X_TITLES.step ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] } : {}) }),
        },
        { label: yLabel, stroke: fg, grid, ticks: grid, size: 56, labelSize: 20, labelFont: AXIS_FONT, values: num },
      ],
      series: [
        { label: xTitle.split(" (")[0], value: (_u, v) => (v === null ? "" : xLabels ? xLabels[v] ?? "" : fmtNum(v)) },
        ...data.series.map(line),
        ...(smooth > 0 ? data.series.map(faint) : []),
      ],
      cursor: {
        sync: { key: view.zoom.sync },
        // the zoom is the group's: every chart of the page follows a drag on one
        drag: { x: true, y: false, setScale: false },
      },
      // a dashed line gets a dashed legend marker: otherwise validation or DR-term lines
      // read as their solid twins in the legend
      legend: { show: true, markers: { dash: (u: uPlot, i: number) => (u.series[i].dash ? "dashed" : "solid") } },
      hooks: {
        setSelect: [(u: uPlot) => {
          if (u.select.width < 3) return;
          const range: [number, number] = [u.posToVal(u.select.left, "x"), u.posToVal(u.select.left + u.select.width, "x")];
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          view.zoom.set(zoomKey, range);
        }],
        ready: [(u: uPlot) => {
          u.over.addEventListener("dblclick", () => view.zoom.reset());
          // the raw lines need no legend rows of their own: their smoothed twins have them
          const rows = u.root.querySelectorAll<HTMLElement>(".u-legend .u-series");
          for (let i = 1 + data.series.length; i < rows.length; i++) rows[i].style.display = "none";
        }],
        ...(mark === null ? {} : {
          draw: [(u: uPlot) => {
            const xv = data.x[mark];
            const yv = data.series[0]?.values[mark];
            if (xv === undefined || yv === null || yv === undefined) return;
            const cx = u.valToPos(xv, "x", true);
            const cy = u.valToPos(yv, "y", true);
            const ctx = u.ctx;
            ctx.save();
            ctx.strokeStyle = "#e0a800";
            ctx.lineWidth = 3 * devicePixelRatio;
            ctx.beginPath();
            ctx.arc(cx, cy, 9 * devicePixelRatio, 0, 2 * Math.PI);
            ctx.stroke();
            ctx.restore();
          }],
        }),
      },
    };
    plot.current = new uPlot(opts, drawn(data, log, smooth), el);
    view.zoom.join(plot.current, zoomKey);
  });

  useEffect(() => {
    const el = box.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => {
      if (plot.current && el.clientWidth > 0) plot.current.setSize({ width: Math.max(260, el.clientWidth), height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      if (plot.current) view.zoom.leave(plot.current);
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  const exportCsv = () => saveBlob(new Blob([toCsv(data, xTitle)], { type: "text/csv" }), fileName(title, "csv"));
  const exportPng = () => plot.current && savePng(plot.current, title, data.series);
  return (
    <figure class="chart" data-testid={testid} data-points={n} data-series={data.series.length}
      data-log={String(log)} data-smooth={smooth} data-x-labels={xLabels?.join(" | ")}>
      <div class="chart-head">
        <figcaption>
          {title}
          {log && <span class="muted"> (log scale)</span>}
        </figcaption>
        <span class="chart-tools">
          <button class="small" data-export="csv" title="The chart's points as CSV" disabled={!n} onClick={exportCsv}>CSV</button>
          <button class="small" data-export="png" title="The chart as a PNG image" disabled={!n} onClick={exportPng}>PNG</button>
        </span>
      </div>
      <div ref={box} class="chart-box" />
      {n === 0 && <div class="chart-empty muted">{empty}</div>}
    </figure>
  );
}

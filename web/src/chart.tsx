// One uPlot line chart. The data may grow (live updates): the chart keeps its instance and
// only swaps the data, unless the set of series changed.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { fmtNum } from "./format";

export interface Series {
  label: string;
  values: (number | null)[];
  dash?: boolean;
  color?: string;
}

export interface ChartData {
  x: number[];
  series: Series[];
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22"];
export const color = (i: number) => PALETTE[i % PALETTE.length];

interface Props {
  title: string;
  data: ChartData;
  log?: boolean;
  xLabel?: string;
  /** Category labels for x = 0, 1, 2, ... (a sweep over non-numeric values). */
  xLabels?: string[];
  /** Index into data.x of a point to mark (the best sweep point). */
  mark?: number | null;
  height?: number;
  testid?: string;
}

export function countPoints(data: ChartData): number {
  let n = 0;
  for (const s of data.series) for (const v of s.values) if (v !== null && Number.isFinite(v)) n++;
  return n;
}

function clean(data: ChartData, log: boolean): uPlot.AlignedData {
  return [data.x, ...data.series.map((s) => s.values.map((v) => (v === null || !Number.isFinite(v) || (log && v <= 0) ? null : v)))];
}

export function Chart({ title, data, log = false, xLabel = "epoch", xLabels, mark = null, height = 190, testid }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = useRef("");
  const n = countPoints(data);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const key = JSON.stringify([data.series.map((s) => [s.label, s.dash, s.color]), log, xLabels, mark, title]);
    if (plot.current && shape.current === key) {
      plot.current.setData(clean(data, log));
      return;
    }
    plot.current?.destroy();
    shape.current = key;
    const width = Math.max(260, el.clientWidth || 400);
    const opts: uPlot.Options = {
      width,
      height,
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      axes: [
        {
          // the legend already names the epoch axis; a swept path is worth its label
          ...(xLabel === "epoch" ? {} : { label: xLabel }),
          ...(xLabels
            ? { splits: () => xLabels.map((_, i) => i), values: (_u: uPlot, vals: number[]) => vals.map((v) => xLabels[v] ?? "") }
            : { values: (_u: uPlot, vals: number[]) => vals.map((v) => fmtNum(v, 3)),
              ...(xLabel === "epoch" ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] } : {}) }),
        },
        { size: 64, values: (_u: uPlot, vals: number[]) => vals.map((v) => fmtNum(v, 3)) },
      ],
      series: [
        { label: xLabels ? xLabel : xLabel, value: (_u, v) => (v === null ? "" : xLabels ? xLabels[v] ?? "" : fmtNum(v)) },
        ...data.series.map((s, i) => ({
          label: s.label,
          stroke: s.color ?? color(i),
          width: 2,
          dash: s.dash ? [5, 4] : undefined,
          spanGaps: true,
          points: { show: true, size: 5 },
          value: (_u: uPlot, v: number | null) => (v === null ? "" : fmtNum(v)),
        })),
      ],
      // a dashed line gets a dashed legend marker: otherwise validation or DR-term lines
      // read as their solid twins in the legend
      legend: { show: true, markers: { dash: (u: uPlot, i: number) => (u.series[i].dash ? "dashed" : "solid") } },
      hooks: mark === null ? {} : {
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
      },
    };
    plot.current = new uPlot(opts, clean(data, log), el);
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
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  return (
    <figure class="chart" data-testid={testid} data-points={n} data-series={data.series.length}>
      <figcaption>
        {title}
        {log && <span class="muted"> (log scale)</span>}
      </figcaption>
      <div ref={box} class="chart-box" />
      {n === 0 && <div class="chart-empty muted">waiting for the first epoch…</div>}
    </figure>
  );
}

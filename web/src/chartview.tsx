// A page's chart settings, kept in its URL (smoothing, y scale, x axis) so a shared link shows
// the same view, and the zoom its charts share. One bar of controls per page sets them.
import { createContext } from "preact";
import { useContext, useEffect, useMemo, useState } from "preact/hooks";
import type uPlot from "uplot";
import { setQuery, useRoute } from "./route";

export type XAxis = "epoch" | "step" | "wall";
export type YScale = "auto" | "linear" | "log";

export interface ChartView {
  /** EMA weight in [0, 0.99], as TensorBoard's smoothing slider; 0 draws the raw points. */
  smooth: number;
  y: YScale;
  x: XAxis;
  zoom: ZoomGroup;
}

let groups = 0;

/** Charts that zoom together: a drag on one sets the x range of every chart joined under the
 * same axis key (a sweep's charts each have their own swept value, so their own key). */
export class ZoomGroup {
  readonly sync = `drtrain-charts-${++groups}`;
  private ranges = new Map<string, [number, number]>();
  private plots = new Map<uPlot, string>();
  private listeners = new Set<() => void>();

  get zoomed(): boolean {
    return this.ranges.size > 0;
  }

  join(u: uPlot, axis: string): void {
    this.plots.set(u, axis);
    const r = this.ranges.get(axis);
    if (r) u.setScale("x", { min: r[0], max: r[1] });
  }

  leave(u: uPlot): void {
    this.plots.delete(u);
  }

  /** Keeps a zoomed chart zoomed when new points arrive. */
  keep(u: uPlot): void {
    const r = this.ranges.get(this.plots.get(u) ?? "");
    if (r) u.setScale("x", { min: r[0], max: r[1] });
  }

  set(axis: string, range: [number, number]): void {
    this.ranges.set(axis, range);
    for (const [u, a] of this.plots) if (a === axis) u.setScale("x", { min: range[0], max: range[1] });
    this.changed();
  }

  reset(): void {
    if (!this.ranges.size) return;
    this.ranges.clear();
    for (const u of this.plots.keys()) u.setData(u.data, true);
    this.changed();
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }
}

const defaultView: ChartView = { smooth: 0, y: "auto", x: "epoch", zoom: new ZoomGroup() };
export const ChartViewContext = createContext<ChartView>(defaultView);
export const useChartViewContext = () => useContext(ChartViewContext);

/** The chart settings in the current route's query: smooth=0.6, y=log|linear, x=step|wall. */
export function useChartView(): ChartView {
  const { query } = useRoute();
  const zoom = useMemo(() => new ZoomGroup(), []);
  const smooth = Math.min(0.99, Math.max(0, Number(query.get("smooth")) || 0));
  const y = (["linear", "log"] as const).find((v) => v === query.get("y")) ?? "auto";
  const x = (["step", "wall"] as const).find((v) => v === query.get("x")) ?? "epoch";
  useEffect(() => zoom.reset(), [x]); // a range in epochs means nothing in steps or seconds
  return useMemo(() => ({ smooth, y, x, zoom }), [smooth, y, x, zoom]);
}

export const X_TITLES: Record<XAxis, string> = {
  epoch: "epoch",
  step: "step (epochs of the run, across phases)",
  wall: "wall time (s since the job started)",
};

export function ChartControls({ view, smoothing = true, xChoice = true }: { view: ChartView; smoothing?: boolean; xChoice?: boolean }) {
  const [zoomed, setZoomed] = useState(view.zoom.zoomed);
  useEffect(() => view.zoom.subscribe(() => setZoomed(view.zoom.zoomed)), [view.zoom]);
  return (
    <div class="chart-controls card" id="chart-controls">
      {smoothing && (
        <label title="Exponential moving average, debiased as in TensorBoard; the raw line stays faint behind">
          Smoothing
          <input type="range" id="chart-smooth" min={0} max={0.99} step={0.01} value={view.smooth}
            onInput={(e) => setQuery({ smooth: String(Number((e.target as HTMLInputElement).value) || "") })} />
          <span class="mono" id="chart-smooth-value">{view.smooth.toFixed(2)}</span>
        </label>
      )}
      <label>
        Y scale
        <select id="chart-y" value={view.y} onChange={(e) => setQuery({ y: (e.target as HTMLSelectElement).value.replace("auto", "") })}>
          <option value="auto">as suited (log for gradient norms)</option>
          <option value="linear">linear</option>
          <option value="log">log</option>
        </select>
      </label>
      {xChoice && (
        <label title="Points are recorded once per epoch of each phase (and pretraining layer), with the time they were written. Epoch restarts at 1 in each phase and layer; step counts the run's epochs in the order they ran (each pretraining layer's, then fine-tuning's), so step 1 is the run's first epoch">
          X axis
          <select id="chart-x" value={view.x} onChange={(e) => setQuery({ x: (e.target as HTMLSelectElement).value.replace("epoch", "") })}>
            <option value="epoch">epoch</option>
            <option value="step">step</option>
            <option value="wall">wall time</option>
          </select>
        </label>
      )}
      <button class="small" id="reset-zoom" disabled={!zoomed} onClick={() => view.zoom.reset()}>Reset zoom</button>
      <span class="muted small">Drag across a chart to zoom {xChoice ? "all charts" : "it"}; double-click to zoom out.</span>
    </div>
  );
}

// Metric points (as the worker writes them; their names are in src/names.ts) turned into
// chart data.
import { color, type ChartData, type CsvRow, type Series } from "./chart";
import type { XAxis } from "./chartview";
import { fmtBytes, fmtDuration, fmtNum, fmtPct, parseTime } from "./format";
import { GRAD_NORM, GRAD_NORM_DR, type FinalMetric, type FinetuneMetric, type PretrainMetric } from "./names";
import type { MetricPoint, Spec } from "./types";

// A title for every pretraining metric (tsc refuses a missing one), in the charts' order.
const PRETRAIN_TITLES: Record<PretrainMetric, string> = {
  recon_error: "Reconstruction error",
  free_energy_gap: "Free-energy gap (held-out − train)",
  dr: "DR value (generative)",
  // near 0: the mini-batches held almost no cross-group pairs, so DR had nothing to act on
  dr_pairs_per_batch: "Cross-group pairs per mini-batch (DR's input)",
  cross_group_divergence: "Cross-group divergence of p(h|v)",
  pseudo_log_likelihood: "Pseudo log-likelihood",
};
export const PRETRAIN_CHARTS = Object.entries(PRETRAIN_TITLES) as [PretrainMetric, string][];

/** Adds points to a list, ignoring any seq already there (a resumed stream may repeat). */
export function merge(into: MetricPoint[], seen: Set<number>, points: MetricPoint[]): boolean {
  let added = false;
  for (const p of points) {
    if (seen.has(p.seq)) continue;
    seen.add(p.seq);
    into.push(p);
    added = true;
  }
  return added;
}

interface Line {
  label: string;
  match: (p: MetricPoint) => boolean;
  dash?: boolean;
  color?: string;
  /** The job the line's points belong to (compare), for the CSV. */
  job?: string;
}

/** Where a point goes on the x axis. Points carry their phase, layer, epoch and the time they
 * were written. */
export type XOf = (p: MetricPoint) => number;

const epochOfRun = (p: MetricPoint) => `${p.phase}/${p.layer}/${p.epoch}`;

/** The run's step: its epochs numbered 1, 2, ... in the order they ran (every pretraining
 * layer's, then fine-tuning's), from a run's own points. An epoch a retry ran again keeps the
 * step it had. */
export function stepOf(points: MetricPoint[]): XOf {
  const order = new Map<string, number>();
  for (const p of [...points].sort((a, b) => a.seq - b.seq)) {
    const at = epochOfRun(p);
    if (!order.has(at)) order.set(at, order.size + 1);
  }
  return (p) => order.get(epochOfRun(p)) ?? Number.NaN;
}

/** x for the page's axis: the epoch, the run's step (from `points`, all of the run's), or
 * seconds since `startMs` (the job's start). */
export function xOf(axis: XAxis, startMs: number | null, points: MetricPoint[]): XOf {
  if (axis === "step") return stepOf(points);
  if (axis === "epoch" || startMs === null) return (p) => p.epoch;
  return (p) => ((parseTime(p.at) ?? startMs) - startMs) / 1000;
}

const epochOf: XOf = (p) => p.epoch;

/** One x value per x seen in any line; each line's value there (last one wins). */
export function byEpoch(points: MetricPoint[], lines: Line[], at: XOf = epochOf): ChartData {
  const xs = new Set<number>();
  const maps = lines.map(() => new Map<number, number>());
  const rows: CsvRow[] = [];
  for (const p of points) {
    lines.forEach((line, i) => {
      if (line.match(p)) {
        const x = at(p);
        maps[i].set(x, p.value);
        xs.add(x);
        rows.push({ series: line.label, job: line.job, point: p });
      }
    });
  }
  const x = [...xs].sort((a, b) => a - b);
  const series: Series[] = lines.map((line, i) => ({
    label: line.label, dash: line.dash, color: line.color,
    values: x.map((e) => maps[i].get(e) ?? null),
  }));
  return { x, series, rows };
}

export function pretrainLayers(points: MetricPoint[], spec: Spec): number[] {
  const n = spec.pretrain ? (spec.model?.hidden_layers?.length ?? 0) : 0;
  const layers = new Set<number>(Array.from({ length: n }, (_, i) => i));
  for (const p of points) if (p.phase === "pretrain" && p.layer !== null) layers.add(p.layer);
  return [...layers].sort((a, b) => a - b);
}

export function pretrainChart(points: MetricPoint[], layers: number[], name: PretrainMetric, at?: XOf): ChartData {
  return byEpoch(points, layers.map((l) => ({
    label: `layer ${l}`,
    match: (p: MetricPoint) => p.phase === "pretrain" && p.layer === l && p.name === name,
  })), at);
}

export function finetuneChart(points: MetricPoint[], names: [FinetuneMetric, string, boolean?][], at?: XOf): ChartData {
  return byEpoch(points, names.map(([name, label, dash]) => ({
    label, dash,
    match: (p: MetricPoint) => p.phase === "finetune" && p.name === name,
  })), at);
}


/** Hidden layers first (by index), the output head last. */
function byLayer(names: string[]): string[] {
  const order = (s: string) => (s.endsWith(".head") ? 1e9 : Number(s.replace(/\D/g, "")) || 0);
  return [...names].sort((a, b) => order(a) - order(b));
}

/** Gradient norms of the classification loss: every layer the spec trains, even before its
 * first point, so the chart's legend is complete from the start. */
export function gradNames(points: MetricPoint[], spec: Spec): string[] {
  const names = new Set<string>();
  const n = spec.finetune ? (spec.model?.hidden_layers?.length ?? 0) : 0;
  for (let i = 0; i < n; i++) names.add(`${GRAD_NORM}layer${i}`);
  if (spec.finetune) names.add(`${GRAD_NORM}head`);
  for (const p of points) if (p.phase === "finetune" && p.name.startsWith(GRAD_NORM)) names.add(p.name);
  return byLayer([...names]);
}

/** Gradient norms of the DR term alone: only where the worker wrote them (feature DR on). */
export function drGradNames(points: MetricPoint[]): string[] {
  const names = new Set<string>();
  for (const p of points) if (p.phase === "finetune" && p.name.startsWith(GRAD_NORM_DR)) names.add(p.name);
  return byLayer([...names]);
}

const layerOf = (name: string) => name.slice(name.indexOf(".") + 1);

function featureDrOn(spec: Spec): boolean {
  return (spec.finetune?.dr?.weight ?? 0) > 0;
}

/** The vanishing-gradient chart: one solid line per layer for the classification loss and,
 * when recorded, one dashed line per layer for the DR term in the same colour as its layer. */
export function gradientChart(points: MetricPoint[], spec: Spec, at?: XOf): ChartData {
  const classification = gradNames(points, spec);
  const layerColour = new Map(classification.map((name, i) => [layerOf(name), color(i)]));
  const finetuneNamed = (name: string) => (p: MetricPoint) => p.phase === "finetune" && p.name === name;
  return byEpoch(points, [
    ...classification.map((name, i) => ({ label: layerOf(name), color: color(i), match: finetuneNamed(name) })),
    ...drGradNames(points).map((name, i) => ({
      label: `DR ${layerOf(name)}`, dash: true, match: finetuneNamed(name),
      color: layerColour.get(layerOf(name)) ?? color(classification.length + i),
    })),
  ], at);
}

/** Says which loss each line's gradient comes from. Jobs trained before the DR term's norms
 * were recorded apart logged one norm of the whole loss, classification plus DR. */
export function gradientTitle(points: MetricPoint[], spec: Spec): string {
  const base = "Gradient norm per layer (vanishing-gradient view)";
  const split = `${base}: classification loss solid, DR term dashed`;
  if (drGradNames(points).length > 0) return split;
  if (!featureDrOn(spec)) return `${base}: classification loss`;
  const wholeLoss = points.some((p) => p.phase === "finetune" && p.name.startsWith(GRAD_NORM));
  return wholeLoss ? `${base}: classification + DR loss together` : split;
}

/** A metric identified across jobs: "finetune/val_accuracy" or "pretrain/recon_error/L0". */
export function seriesKey(p: MetricPoint): string {
  return p.phase === "pretrain" && p.layer !== null ? `pretrain/${p.name}/L${p.layer}` : `${p.phase}/${p.name}`;
}

/** Whether a spec's phase trains with DR. Without it a phase has no DR value (jobs trained
 * before that was so recorded 0 each epoch, a flat line that says nothing): charts leave the
 * DR value of such a phase out. */
export function drOn(spec: Spec, phase: "pretrain" | "finetune"): boolean {
  const dr = spec?.[phase]?.dr;
  return Boolean(dr && (dr.weight ?? 0) > 0);
}

/** Whether a series key is a phase's DR value (not its diagnostics, such as the pairs). */
export function drValuePhase(key: string): "pretrain" | "finetune" | null {
  const [phase, name] = key.split("/");
  return name === "dr" && (phase === "pretrain" || phase === "finetune") ? phase : null;
}

export function matchKey(key: string): (p: MetricPoint) => boolean {
  return (p) => seriesKey(p) === key;
}

export function keyLabel(key: string): string {
  const [phase, name, layer] = key.split("/");
  return `${phase === "pretrain" ? "pretraining" : "fine-tuning"}: ${name}${layer ? ` (layer ${layer.slice(1)})` : ""}`;
}

/** The y axis title of a metric's chart, with its unit. */
export function yTitle(name: string): string {
  if (name.startsWith(GRAD_NORM) || name.startsWith(GRAD_NORM_DR)) return "L2 norm of the gradient";
  if (name.endsWith("_loss")) return "cross-entropy (nats)";
  if (name.endsWith("_accuracy")) return "accuracy (fraction)";
  const titles: Record<string, string> = {
    recon_error: "mean squared error",
    free_energy_gap: "free energy (nats)",
    pseudo_log_likelihood: "nats per example",
    dr: "DR term (unitless)",
    dr_pairs_per_batch: "pairs per mini-batch",
    cross_group_divergence: "squared Hellinger",
  };
  return titles[name] ?? name;
}

type Shown = [label: string, format: (v: number) => string];
const seconds = (v: number) => `${fmtDuration(v * 1000)} (${fmtNum(v, 3)} s)`;
// A label and a unit for every final metric (tsc refuses a missing one) and the result's other
// numbers: the whole attempt's time and the model's size.
const FINAL_SHOWN: Record<FinalMetric | "attempt_seconds" | "model_size_bytes", Shown> = {
  train_loss: ["Training loss (cross-entropy, nats)", fmtNum],
  train_accuracy: ["Training accuracy", fmtPct],
  val_loss: ["Validation loss (cross-entropy, nats)", fmtNum],
  val_accuracy: ["Validation accuracy", fmtPct],
  test_loss: ["Test loss (cross-entropy, nats)", fmtNum],
  test_accuracy: ["Test accuracy", fmtPct],
  epochs_pretrain: ["Pretraining epochs (all layers)", fmtNum],
  epochs_finetune: ["Fine-tuning epochs", fmtNum],
  wall_seconds: ["Training time", seconds],
  attempt_seconds: ["Attempt time (data, training, model)", seconds],
  model_size_bytes: ["Model file size", fmtBytes],
};

/** A final metric as a person reads it: [label, value with its unit]. */
export function finalShown(key: string, v: number): [string, string] {
  const shown = (FINAL_SHOWN as Record<string, Shown | undefined>)[key];
  return shown ? [shown[0], shown[1](v)] : [key, fmtNum(v)];
}

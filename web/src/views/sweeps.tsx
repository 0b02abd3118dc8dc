// Sweeps: the list (found through the jobs' sweep_id) and one sweep's grid summary.
import { useEffect, useMemo, useState } from "preact/hooks";
import { cancelSweep, deleteSweep, getSweep, listDatasets, listJobs } from "../api";
import { Chart, type ChartData } from "../chart";
import { ChartControls, ChartViewContext, useChartView } from "../chartview";
import { architecture, drShort, fmtAgo, fmtNum, fmtTime, higherIsBetter, parseTime, shortId, show } from "../format";
import { yTitle } from "../metrics";
import type { FinalMetric } from "../names";
import { navigate, usePoll } from "../route";
import type { Job, SummaryRow, Sweep } from "../types";
import { TERMINAL } from "../types";
import { Confirm, ErrorBox, errorMessage, Section, StatusBadge } from "../ui";
import { ParallelCoords } from "./parcoords";

// Shown beside the chosen metric in the summary table, when the sweep has them.
const SIDE_METRICS: FinalMetric[] = ["val_accuracy", "val_loss", "test_accuracy", "train_accuracy"];

interface SweepInfo {
  id: string;
  jobs: Job[];
  created: number;
}

export function SweepsPage() {
  const [sweeps, setSweeps] = useState<SweepInfo[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [open, setOpen] = useState("");

  usePoll(async () => {
    const by = new Map<string, SweepInfo>();
    let token: string | null = null;
    for (let i = 0; i < 5; i++) {
      const page = await listJobs({ pageSize: 200, pageToken: token });
      for (const j of page.items) {
        if (!j.sweep_id) continue;
        const s = by.get(j.sweep_id) ?? { id: j.sweep_id, jobs: [], created: Infinity };
        s.jobs.push(j);
        s.created = Math.min(s.created, parseTime(j.created_at) ?? Infinity);
        by.set(j.sweep_id, s);
      }
      token = page.next;
      if (!token) break;
    }
    setSweeps([...by.values()].sort((a, b) => b.created - a.created));
    setError(null);
  }, 5000, []);

  return (
    <div>
      <div class="page-head">
        <h1>Sweeps</h1>
        <span class="spacer" />
        <form class="inline" onSubmit={(e) => { e.preventDefault(); if (open.trim()) navigate(`#/sweeps/${open.trim()}`); }}>
          <input placeholder="sweep id" value={open} onInput={(e) => setOpen((e.target as HTMLInputElement).value)} aria-label="Sweep id" />
          <button>Open</button>
        </form>
        <a class="button primary" href="#/submit?sweep=1">New sweep</a>
      </div>
      <ErrorBox error={error} />
      {sweeps && !sweeps.length && <p class="muted empty">No sweeps yet. A sweep runs one job per point of a grid: start one from <a href="#/submit?sweep=1">the submit form</a>.</p>}
      {sweeps && sweeps.length > 0 && (
        <table id="sweeps-table">
          <thead><tr><th>Sweep</th><th>Jobs</th><th>Done</th><th>Model · DR</th><th>Created</th></tr></thead>
          <tbody>
            {sweeps.map((s) => {
              const done = s.jobs.filter((j) => TERMINAL.has(j.status)).length;
              const spec = s.jobs[0].spec;
              const swept = Object.keys(s.jobs[0].grid_point ?? {});
              return (
                <tr key={s.id}>
                  <td><a href={`#/sweeps/${s.id}`} class="mono">{shortId(s.id)}</a></td>
                  <td class="num">{s.jobs.length}</td>
                  <td class="num">{done} / {s.jobs.length}</td>
                  <td><span class="mono">{architecture(spec)}</span> <span class="muted small">{drShort(spec, swept)}</span></td>
                  <td class="muted small">{fmtAgo(new Date(s.created).toISOString())}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}

const pointKey = (p: Record<string, unknown>) => JSON.stringify(p, Object.keys(p).sort());

export function SweepPage({ id }: { id: string }) {
  const [sweep, setSweep] = useState<Sweep | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [metric, setMetric] = useState("");
  const [datasetName, setDatasetName] = useState("");
  const [deleteError, setDeleteError] = useState("");
  const [cancelError, setCancelError] = useState("");
  const view = useChartView();

  usePoll(async () => {
    if (sweep && sweep.children.every((c) => TERMINAL.has(c.status))) return;
    setSweep(await getSweep(id));
    setError(null);
  }, 3000, [id, sweep?.children.every((c) => TERMINAL.has(c.status))]);

  const metrics = useMemo(() => {
    const names = new Set<string>();
    for (const row of sweep?.summary ?? []) for (const k of Object.keys(row.metrics)) names.add(k);
    return [...names].sort();
  }, [sweep]);
  const chosen = metric || (metrics.includes("val_accuracy") ? "val_accuracy" : metrics[0] ?? "val_accuracy");
  const paths = useMemo(() => {
    const ps = new Set<string>();
    for (const row of sweep?.summary ?? []) for (const k of Object.keys(row.point)) ps.add(k);
    if (!ps.size) for (const k of Object.keys(sweep?.grid ?? {})) if (k !== "seed") ps.add(k);
    return [...ps];
  }, [sweep]);

  useEffect(() => {
    const id = sweep?.base.dataset_id;
    if (id) listDatasets().then((ds) => setDatasetName(ds.find((d) => d.id === id)?.name ?? ""), () => {});
  }, [sweep?.base.dataset_id]);

  if (error) return <div><p><a href="#/sweeps">← Sweeps</a></p><ErrorBox error={error} /></div>;
  if (!sweep) return <p class="muted">Loading sweep…</p>;

  const up = higherIsBetter(chosen);
  const best = bestRow(sweep.summary, chosen, up);
  const others = SIDE_METRICS.filter((m) => m !== chosen && metrics.includes(m));
  const done = sweep.children.filter((c) => TERMINAL.has(c.status)).length;
  const active = sweep.children.filter((c) => !TERMINAL.has(c.status));
  // One request: the API deletes the sweep with all its jobs, or nothing (its problem says why).
  const remove = async () => {
    setDeleteError("");
    try {
      await deleteSweep(sweep.id);
      navigate("#/sweeps");
    } catch (err) {
      setDeleteError(`Could not delete the sweep: ${errorMessage(err)}`);
    }
  };

  // One request: the API cancels every job of the sweep that has not ended.
  const cancelAll = async () => {
    setCancelError("");
    try {
      setSweep(await cancelSweep(sweep.id));
    } catch (err) {
      setCancelError(`Could not cancel the sweep: ${errorMessage(err)}`);
    }
  };

  return (
    <div data-sweep-id={sweep.id}>
      <p class="crumbs"><a href="#/sweeps">← Sweeps</a></p>
      <div class="page-head">
        <h1>Sweep <span class="mono">{shortId(sweep.id)}</span></h1>
        <span class="muted">{done} of {sweep.children.length} jobs finished · created {fmtTime(sweep.created_at)}</span>
        <span class="spacer" />
        <a class="button" href={`#/compare?ids=${sweep.children.map((c) => c.job_id).join(",")}`}>Compare its jobs</a>
        {active.length ? (
          <>
            <Confirm id="cancel-sweep" label={`Cancel ${active.length} active job${active.length === 1 ? "" : "s"}`} yes="Yes, cancel them"
              question="Cancel every job of this sweep that has not ended? Finished jobs keep their results." onConfirm={cancelAll} />
            <span class="muted small" id="delete-sweep-blocked">Delete: {active.length} job{active.length === 1 ? " is" : "s are"} still active</span>
          </>
        ) : (
          <Confirm id="delete-sweep" label="Delete" yes="Yes, delete it"
            question={`Delete this sweep and its ${sweep.children.length} jobs, their metrics and models? This cannot be undone.`} onConfirm={remove} />
        )}
      </div>
      {deleteError && <p class="error" role="alert" id="sweep-delete-error">{deleteError}</p>}
      {cancelError && <p class="error" role="alert" id="sweep-cancel-error">{cancelError}</p>}
      <div class="summary card">
        <div><span class="label">Base</span><span class="mono">{architecture(sweep.base)}</span> · {drShort(sweep.base, Object.keys(sweep.grid))} ·{" "}
          <span title={sweep.base.dataset_id}>{datasetName || sweep.base.dataset_id}</span></div>
        {Object.entries(sweep.grid).map(([k, v]) => <div><span class="label mono">{k}</span>{v.map((x) => show(x)).join(", ")}</div>)}
      </div>
      <Section title="Grid summary (seeds pooled: mean ± std)" actions={
        <label class="small">Metric <select id="sweep-metric" value={chosen} onChange={(e) => setMetric((e.target as HTMLSelectElement).value)}>
          {(metrics.length ? metrics : [chosen]).map((m) => <option value={m}>{m}</option>)}
        </select></label>
      }>
        <table id="sweep-summary">
          <thead>
            <tr>
              {paths.map((p) => <th class="mono">{p}</th>)}
              <th>runs done</th>
              <th>{chosen}</th>
              {others.map((m) => <th>{m}</th>)}
            </tr>
          </thead>
          <tbody>
            {sweep.summary.map((row) => {
              const isBest = best !== null && pointKey(row.point) === pointKey(best.point);
              return (
                <tr class={isBest ? "best" : ""} data-best={isBest ? "true" : undefined}>
                  {paths.map((p) => <td class="mono">{show(row.point[p])}</td>)}
                  <td class="num">{row.n_done} / {row.n}</td>
                  <td class="num strong">{meanStd(row, chosen)}{isBest && <BestMark row={row} rows={sweep.summary} metric={chosen} />}</td>
                  {others.map((m) => <td class="num">{meanStd(row, m)}</td>)}
                </tr>
              );
            })}
          </tbody>
        </table>
      </Section>
      <ChartViewContext.Provider value={view}>
        <ChartControls view={view} smoothing={false} xChoice={false} />
        <Section title={`${chosen} against each swept value`}>
          <div class="charts">
            {paths.map((p) => {
              const { data, labels, mark } = sweepChart(sweep.summary, p, chosen, best);
              return <Chart key={`${p}/${chosen}`} testid={`sweep-chart-${p}`} title={`${chosen} vs ${p}`} xLabel={p} xLabels={labels}
                xTicks={labels ? undefined : data.x} yLabel={yTitle(chosen)} data={data} mark={mark} smoothable={false} zoomKey={p} />;
            })}
          </div>
        </Section>
      </ChartViewContext.Provider>
      {paths.length > 1 && (
        <Section title={`${chosen} across the grid (parallel coordinates)`}>
          <ParallelCoords rows={sweep.summary} paths={paths} metric={chosen} higher={up} />
        </Section>
      )}
      <Section title="Jobs">
        <table id="sweep-children">
          <thead><tr><th>Job</th><th>Grid point</th><th>Status</th><th>{chosen}</th></tr></thead>
          <tbody>
            {sweep.children.map((c) => (
              <tr>
                <td><a href={`#/jobs/${c.job_id}`} class="mono">{shortId(c.job_id)}</a></td>
                <td class="mono small">{Object.entries(c.grid_point).map(([k, v]) => `${k}=${show(v)}`).join("  ")}</td>
                <td><StatusBadge status={c.status} /></td>
                <td class="num">{fmtNum(c.result?.[chosen])}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </div>
  );
}

/** The grid point with the best mean, or null when another point ties it: "best" is marked
 * only when it is one point. */
export function bestRow(rows: SummaryRow[], metric: string, higher: boolean): SummaryRow | null {
  const scored = rows.filter((r) => r.metrics[metric]);
  if (!scored.length) return null;
  const means = scored.map((r) => r.metrics[metric].mean);
  const top = higher ? Math.max(...means) : Math.min(...means);
  const at = scored.filter((r) => r.metrics[metric].mean === top);
  return at.length === 1 && scored.length > 1 ? at[0] : null;
}

/** The point's mean ± std, or its one run's figure (one run has no spread to show). */
function meanStd(row: SummaryRow, m: string): string {
  const v = row.metrics[m];
  if (!v) return "—";
  return v.n === 1 ? `${fmtNum(v.mean)} (1 run)` : `${fmtNum(v.mean)} ± ${fmtNum(v.std, 2)}`;
}

/**
 * Whether the best point's mean stands clear of every other's: the two means lie further apart
 * than their std's summed, each over at least two runs. Otherwise the top mean may be noise.
 */
export function clearlyBest(best: SummaryRow, rows: SummaryRow[], metric: string): boolean {
  const b = best.metrics[metric];
  return rows.every((r) => {
    const v = r.metrics[metric];
    if (r === best || !v) return true;
    return (b.n ?? 0) >= 2 && (v.n ?? 0) >= 2 && Math.abs(b.mean - v.mean) > b.std + v.std;
  });
}

function BestMark({ row, rows, metric }: { row: SummaryRow; rows: SummaryRow[]; metric: string }) {
  if (clearlyBest(row, rows, metric)) return <span class="star" title={`best ${metric}`}> ★ best</span>;
  return <span class="star muted" data-overlap="true"
    title={`the highest mean of ${metric}, but within the spread of another point (or from single runs): more seeds would tell`}> ★ top mean</span>;
}

/**
 * Whether sorted numbers read well on a linear axis: no gap between neighbours more than five
 * times another. A DR weight swept over 0, 0.01, 0.1, 1 would crowd three of its four points
 * into a corner; such values are drawn evenly spaced and labelled, in order, like categories.
 */
export function linearEnough(sorted: number[]): boolean {
  const gaps = sorted.slice(1).map((v, i) => v - sorted[i]);
  return gaps.length < 2 || Math.max(...gaps) <= 5 * Math.min(...gaps);
}

/**
 * The chosen metric against one swept path: one line per combination of the other paths
 * (the mean), with mean ± std dashed when there is a single line. Non-numeric values, and
 * numbers too unevenly spaced for a linear axis (`linearEnough`), are categories on the x
 * axis.
 */
export function sweepChart(rows: SummaryRow[], path: string, metric: string, best: SummaryRow | null): { data: ChartData; labels?: string[]; mark: number | null } {
  const values: unknown[] = [];
  for (const r of rows) if (!values.some((v) => JSON.stringify(v) === JSON.stringify(r.point[path]))) values.push(r.point[path]);
  const numeric = values.every((v) => typeof v === "number");
  if (numeric) (values as number[]).sort((a, b) => a - b);
  const linear = numeric && linearEnough(values as number[]);
  const x = linear ? (values as number[]) : values.map((_, i) => i);
  const labels = linear ? undefined : values.map((v) => show(v));
  const idx = (v: unknown) => values.findIndex((w) => JSON.stringify(w) === JSON.stringify(v));
  const groups = new Map<string, SummaryRow[]>();
  for (const r of rows) {
    const rest = Object.fromEntries(Object.entries(r.point).filter(([k]) => k !== path));
    const k = Object.entries(rest).map(([a, b]) => `${a}=${show(b)}`).join(", ");
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const series: ChartData["series"] = [];
  let mark: number | null = null;
  for (const [label, rs] of groups) {
    const mean: (number | null)[] = x.map(() => null);
    const lo: (number | null)[] = x.map(() => null);
    const hi: (number | null)[] = x.map(() => null);
    for (const r of rs) {
      const m = r.metrics[metric];
      if (!m) continue;
      const i = idx(r.point[path]);
      mean[i] = m.mean;
      lo[i] = m.mean - m.std;
      hi[i] = m.mean + m.std;
      if (best && r === best && series.length === 0) mark = i;
    }
    series.push({ label: label ? `mean (${label})` : "mean", values: mean });
    if (groups.size === 1) {
      series.push({ label: "mean + std", values: hi, dash: true, color: "#999" });
      series.push({ label: "mean − std", values: lo, dash: true, color: "#999" });
    }
  }
  if (groups.size > 1) mark = null;
  return { data: { x, series }, labels, mark };
}

// Compare jobs: overlaid curves, final metrics side by side, and the spec fields that differ.
// Everything the view shows is in its URL (ids, added metrics, the picker's filter, the chart
// settings), so a link shows the same comparison.
import { useMemo, useRef, useState } from "preact/hooks";
import { ApiError, getJob, listDatasets, listJobs, metricsSince } from "../api";
import { Chart, color } from "../chart";
import { ChartControls, ChartViewContext, useChartView, type XAxis } from "../chartview";
import { differingPaths, distinguishing, fieldValue, fmtNum, getPath, higherIsBetter, jobTitle, parseTime, runLabel, shortId, show } from "../format";
import { byEpoch, drOn, drValuePhase, finalShown, keyLabel, matchKey, merge, seriesKey, xOf, yTitle } from "../metrics";
import type { FinalMetric } from "../names";
import { listParam, setQuery, usePoll, useRoute } from "../route";
import type { Job, MetricPoint } from "../types";
import { TERMINAL } from "../types";
import { ErrorBox, Section, StatusBadge } from "../ui";

const DEFAULT_KEYS = ["finetune/val_accuracy", "finetune/val_loss", "finetune/train_loss", "finetune/grad_norm.layer0",
  "pretrain/recon_error/L0", "pretrain/cross_group_divergence/L0"];
const FINAL: FinalMetric[] = ["val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_accuracy", "train_loss", "wall_seconds"];

interface Run {
  job: Job;
  points: MetricPoint[];
  seen: Set<number>;
  next: number;
}

/** The best value of a row, or null when two jobs share it: "best" marks one job or none. */
export function uniqueBest(nums: number[], higher: boolean): number | null {
  if (nums.length < 2) return null;
  const best = higher ? Math.max(...nums) : Math.min(...nums);
  return nums.filter((v) => v === best).length === 1 ? best : null;
}

export function ComparePage() {
  const { query } = useRoute();
  const ids = listParam(query, "ids");
  const extra = listParam(query, "m");
  const filter = query.get("q") ?? "";
  const runs = useRef(new Map<string, Run>());
  const [missing, setMissing] = useState<Record<string, string>>({});
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [recent, setRecent] = useState<Job[]>([]);
  const [datasets, setDatasets] = useState<Record<string, string>>({});
  const view = useChartView();

  // Curves: the metrics route, polled while a job is still active. An id the server does not
  // know (deleted, mistyped) is left out with a warning and not asked for again.
  usePoll(async (signal) => {
    for (const id of [...runs.current.keys()]) if (!ids.includes(id)) runs.current.delete(id);
    let changed = false;
    const gone: Record<string, string> = {};
    let failure: unknown = null;
    for (const id of ids) {
      if (missing[id]) continue;
      let run = runs.current.get(id);
      if (run && TERMINAL.has(run.job.status) && run.next > 0) continue;
      try {
        const job = await getJob(id);
        if (!run) {
          run = { job, points: [], seen: new Set(), next: 0 };
          runs.current.set(id, run);
          changed = true;
        }
        if (job.status !== run.job.status || job.progress !== run.job.progress) changed = true;
        run.job = job;
        const { points, next } = await metricsSince(id, run.next, signal);
        if (merge(run.points, run.seen, points)) changed = true;
        run.next = Math.max(next, 1);
      } catch (err) {
        if (err instanceof ApiError && (err.status === 404 || err.status === 422)) {
          gone[id] = err.problem.detail || err.problem.title;
          runs.current.delete(id);
          changed = true;
        } else if (!signal.aborted) failure = err;
      }
    }
    if (Object.keys(gone).length) setMissing((m) => ({ ...m, ...gone }));
    setError(failure);
    if (changed) setVersion((v) => v + 1);
  }, 3000, [ids.join(","), Object.keys(missing).join(",")]);

  usePoll(async () => {
    setRecent((await listJobs({ pageSize: 50 })).items);
  }, 10_000, []);
  // Runs on different datasets are labelled with the datasets' names, not their ids.
  usePoll(async () => {
    setDatasets(Object.fromEntries((await listDatasets()).map((d) => [d.id, d.name])));
  }, 30_000, []);

  const list = ids.map((id) => runs.current.get(id)).filter((r): r is Run => Boolean(r));
  const labels = useMemo(() => {
    const fields = distinguishing(list.map((r) => r.job), 3, datasets);
    return new Map(list.map((r) => [r.job.id, runLabel(r.job, fields(r.job))]));
  }, [version, ids.join(","), datasets]);
  const label = (r: Run) => labels.get(r.job.id) ?? jobTitle(r.job);
  const keys = useMemo(() => {
    const all = new Set<string>();
    for (const r of list) for (const p of r.points) all.add(seriesKey(p));
    return [...all].sort();
  }, [version]);
  const chartKeys = [...DEFAULT_KEYS.filter((k) => keys.includes(k)), ...extra.filter((k) => !DEFAULT_KEYS.includes(k))];

  const diff = useMemo(() => {
    const objs = list.map((r) => ({ name: r.job.name ?? null, tags: r.job.tags ?? [], ...r.job.spec }));
    return differingPaths(objs).map((path) => ({ path, values: objs.map((o) => getPath(o, path)) }));
  }, [version]);

  const setIds = (next: string[]) => setQuery({ ids: next.join(",") });
  const toggle = (id: string) => setIds(ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id]);
  const needle = filter.trim().toLowerCase();
  const pickable = recent.filter((j) => !needle || [j.id, j.name ?? "", ...(j.tags ?? [])].some((s) => s.toLowerCase().includes(needle)));
  const missingIds = ids.filter((id) => missing[id]);

  return (
    <div>
      <div class="page-head"><h1>Compare</h1></div>
      <ErrorBox error={error} />
      {missingIds.length > 0 && (
        <div class="warnings" id="compare-missing" role="alert">
          {missingIds.map((id) => <p data-missing={id}>⚠ Job <span class="mono">{id}</span> was not found ({missing[id]}): it is left out.</p>)}
          <p><button class="small" onClick={() => setIds(ids.filter((id) => !missing[id]))}>Remove {missingIds.length === 1 ? "it" : "them"} from the link</button></p>
        </div>
      )}
      <details class="card picker" open={ids.length < 2}>
        <summary>Pick jobs ({ids.length} chosen)</summary>
        <input type="search" id="compare-filter" placeholder="Filter by name, id or tag" value={filter}
          onInput={(e) => setQuery({ q: (e.target as HTMLInputElement).value })} />
        <div class="pick-list">
          {pickable.map((j) => (
            <label class="pick" key={j.id}>
              <input type="checkbox" checked={ids.includes(j.id)} onChange={() => toggle(j.id)} data-pick={j.id} />
              {jobTitle(j)} <StatusBadge status={j.status} /> <span class="muted small mono">{shortId(j.id)}</span>
            </label>
          ))}
        </div>
      </details>
      {list.length > 0 && (
        <ChartViewContext.Provider value={view}>
          <ChartControls view={view} />
          <Section title="Curves" actions={
            <label class="small">Add a metric <select value="" onChange={(e) => {
              const k = (e.target as HTMLSelectElement).value;
              if (k && !chartKeys.includes(k)) setQuery({ m: [...extra, k].join(",") });
            }} id="compare-metric">
              <option value="">—</option>
              {keys.filter((k) => !chartKeys.includes(k)).map((k) => <option value={k}>{keyLabel(k)}</option>)}
            </select></label>
          }>
            <div class="legend-jobs" id="compare-legend">
              {list.map((r, i) => <span data-job-id={r.job.id}><i style={{ background: color(i) }} /> <a href={`#/jobs/${r.job.id}`}>{label(r)}</a></span>)}
            </div>
            <div class="charts">
              {chartKeys.map((k) => (
                <Chart key={k} testid={`compare-${k}`} title={keyLabel(k)} log={k.includes("grad_norm")}
                  yLabel={yTitle(k.split("/")[1])} data={overlay(list, k, label, view.x)} />
              ))}
              {!chartKeys.length && <p class="muted">No metric points yet.</p>}
            </div>
            {extra.length > 0 && (
              <p class="small">{extra.map((k) => (
                <button class="small" onClick={() => setQuery({ m: extra.filter((x) => x !== k).join(",") })}>✕ {keyLabel(k)}</button>
              ))}</p>
            )}
          </Section>
          <Section title="Final metrics">
            <table id="compare-final">
              <thead><tr><th>metric</th>{list.map((r) => <th><a href={`#/jobs/${r.job.id}`}>{label(r)}</a></th>)}</tr></thead>
              <tbody>
                <tr><th>status</th>{list.map((r) => <td><StatusBadge status={r.job.status} /></td>)}</tr>
                {FINAL.map((m) => {
                  const vals = list.map((r) => r.job.result?.[m]);
                  const nums = vals.filter((v): v is number => typeof v === "number");
                  if (!nums.length) return null;
                  const best = uniqueBest(nums, m !== "wall_seconds" && higherIsBetter(m));
                  return (
                    <tr data-metric={m}><th>{finalShown(m, 0)[0]} <span class="muted small mono">{m}</span></th>
                      {vals.map((v) => <td class={`num${v === best ? " best" : ""}`}>{typeof v === "number" ? finalShown(m, v)[1] : fmtNum(v)}</td>)}</tr>
                  );
                })}
              </tbody>
            </table>
          </Section>
          <Section title={`Spec fields that differ (${diff.length})`}>
            {diff.length ? (
              <table id="compare-diff">
                <thead><tr><th>field</th>{list.map((r) => <th>{label(r)}</th>)}</tr></thead>
                <tbody>{diff.map((d) => <tr data-path={d.path}><th class="mono">{d.path}</th>{d.values.map((v) => <td class="mono">{d.path === "dataset_id" ? fieldValue(d.path, v, datasets) : show(v)}</td>)}</tr>)}</tbody>
              </table>
            ) : <p class="muted">The specs are identical.</p>}
          </Section>
        </ChartViewContext.Provider>
      )}
    </div>
  );
}

/** One line per job for one metric key, on the page's x axis (each job's own steps, or wall
 * time from each job's start). */
function overlay(list: Run[], key: string, label: (r: Run) => string, axis: XAxis) {
  const xs = list.map((r) => xOf(axis, parseTime(r.job.started_at) ?? (r.points.length ? parseTime(r.points[0].at) : null), r.points));
  // a run whose phase has no DR has no DR value to draw (older jobs recorded 0s, which are
  // no measurement); the others keep their colours
  const phase = drValuePhase(key);
  const drawn = list.map((r, i) => ({ r, i })).filter(({ r }) => phase === null || drOn(r.job.spec, phase));
  const tagged = drawn.flatMap(({ r, i }) => r.points.filter(matchKey(key)).map((p) => ({ ...p, run: i })));
  const at = (p: MetricPoint) => xs[(p as MetricPoint & { run: number }).run](p);
  const data = byEpoch(tagged, drawn.map(({ r, i }) => ({
    label: label(r), color: color(i), job: r.job.id, match: (p: MetricPoint) => (p as MetricPoint & { run: number }).run === i,
  })), at);
  // the CSV holds the points as the API served them, without the run index added here
  data.rows = data.rows?.map((row) => {
    const { run: _run, ...point } = row.point as MetricPoint & { run: number };
    return { ...row, point };
  });
  return data;
}

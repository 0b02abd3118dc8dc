// Compare jobs: overlaid curves, final metrics side by side, and the spec fields that differ.
import { useMemo, useRef, useState } from "preact/hooks";
import { getJob, listJobs, metricsSince } from "../api";
import { Chart, color } from "../chart";
import { flatten, fmtNum, getPath, higherIsBetter, jobTitle, shortId, show } from "../format";
import { byEpoch, keyLabel, matchKey, merge, seriesKey } from "../metrics";
import type { FinalMetric } from "../names";
import { navigate, usePoll } from "../route";
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

export function ComparePage({ ids }: { ids: string[] }) {
  const runs = useRef(new Map<string, Run>());
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [recent, setRecent] = useState<Job[]>([]);
  const [extra, setExtra] = useState("");

  // Curves: the metrics route, polled while a job is still active.
  usePoll(async (signal) => {
    for (const id of [...runs.current.keys()]) if (!ids.includes(id)) runs.current.delete(id);
    let changed = false;
    for (const id of ids) {
      let run = runs.current.get(id);
      if (run && TERMINAL.has(run.job.status) && run.next > 0) continue;
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
    }
    setError(null);
    if (changed) setVersion((v) => v + 1);
  }, 3000, [ids.join(",")]);

  usePoll(async () => {
    setRecent((await listJobs({ pageSize: 50 })).items);
  }, 10_000, []);

  const list = ids.map((id) => runs.current.get(id)).filter((r): r is Run => Boolean(r));
  const keys = useMemo(() => {
    const all = new Set<string>();
    for (const r of list) for (const p of r.points) all.add(seriesKey(p));
    return [...all].sort();
  }, [version]);
  const chartKeys = [...DEFAULT_KEYS.filter((k) => keys.includes(k)), ...(extra && !DEFAULT_KEYS.includes(extra) ? [extra] : [])];

  const diff = useMemo(() => {
    const flat = list.map((r) => flatten({ name: r.job.name ?? null, tags: r.job.tags ?? [], ...r.job.spec }));
    const paths = new Set(flat.flatMap((f) => Object.keys(f)));
    const rows = [...paths].sort().filter((p) => new Set(flat.map((f) => JSON.stringify(f[p]))).size > 1)
      .map((p) => ({ path: p, values: flat.map((f) => f[p]) }));
    // A section that is null in one spec (DR off) is one row holding each whole section.
    const nulled = rows.filter((r) => r.values.some((v) => v === null) && rows.some((c) => c.path.startsWith(`${r.path}.`)));
    return rows.filter((r) => !nulled.some((n) => r.path.startsWith(`${n.path}.`)))
      .map((r) => (nulled.includes(r) ? { ...r, values: list.map((run) => getPath(run.job.spec, r.path) ?? null) } : r));
  }, [version]);

  const toggle = (id: string) => {
    const next = ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id];
    navigate(`#/compare${next.length ? `?ids=${next.join(",")}` : ""}`);
  };

  return (
    <div>
      <div class="page-head"><h1>Compare</h1></div>
      <ErrorBox error={error} />
      <details class="card picker" open={ids.length < 2}>
        <summary>Pick jobs ({ids.length} chosen)</summary>
        <div class="pick-list">
          {recent.map((j) => (
            <label class="pick" key={j.id}>
              <input type="checkbox" checked={ids.includes(j.id)} onChange={() => toggle(j.id)} data-pick={j.id} />
              {jobTitle(j)} <StatusBadge status={j.status} /> <span class="muted small mono">{shortId(j.id)}</span>
            </label>
          ))}
        </div>
      </details>
      {list.length > 0 && (
        <>
          <Section title="Curves" actions={
            <label class="small">Add a metric <select value={extra} onChange={(e) => setExtra((e.target as HTMLSelectElement).value)} id="compare-metric">
              <option value="">—</option>
              {keys.map((k) => <option value={k}>{keyLabel(k)}</option>)}
            </select></label>
          }>
            <div class="legend-jobs">
              {list.map((r, i) => <span><i style={{ background: color(i) }} /> <a href={`#/jobs/${r.job.id}`}>{jobTitle(r.job)}</a></span>)}
            </div>
            <div class="charts">
              {chartKeys.map((k) => (
                <Chart key={k} testid={`compare-${k}`} title={keyLabel(k)} log={k.includes("grad_norm")}
                  data={overlay(list, k)} />
              ))}
              {!chartKeys.length && <p class="muted">No metric points yet.</p>}
            </div>
          </Section>
          <Section title="Final metrics">
            <table id="compare-final">
              <thead><tr><th>metric</th>{list.map((r) => <th><a href={`#/jobs/${r.job.id}`}>{jobTitle(r.job)}</a></th>)}</tr></thead>
              <tbody>
                <tr><th>status</th>{list.map((r) => <td><StatusBadge status={r.job.status} /></td>)}</tr>
                {FINAL.map((m) => {
                  const vals = list.map((r) => r.job.result?.[m]);
                  const nums = vals.filter((v): v is number => typeof v === "number");
                  if (!nums.length) return null;
                  const best = m === "wall_seconds" ? Math.min(...nums) : higherIsBetter(m) ? Math.max(...nums) : Math.min(...nums);
                  return (
                    <tr><th>{m}</th>{vals.map((v) => <td class={`num${v === best && nums.length > 1 ? " best" : ""}`}>{fmtNum(v)}</td>)}</tr>
                  );
                })}
              </tbody>
            </table>
          </Section>
          <Section title={`Spec fields that differ (${diff.length})`}>
            {diff.length ? (
              <table id="compare-diff">
                <thead><tr><th>field</th>{list.map((r) => <th>{jobTitle(r.job)}</th>)}</tr></thead>
                <tbody>{diff.map((d) => <tr data-path={d.path}><th class="mono">{d.path}</th>{d.values.map((v) => <td class="mono">{show(v)}</td>)}</tr>)}</tbody>
              </table>
            ) : <p class="muted">The specs are identical.</p>}
          </Section>
        </>
      )}
    </div>
  );
}

/** One line per job for one metric key, on a shared epoch axis. */
function overlay(list: Run[], key: string) {
  const tagged = list.flatMap((r, i) => r.points.filter(matchKey(key)).map((p) => ({ ...p, run: i })));
  return byEpoch(tagged, list.map((r, i) => ({
    label: jobTitle(r.job), color: color(i), match: (p: MetricPoint) => (p as MetricPoint & { run: number }).run === i,
  })));
}

// The runs table: live (polled), filtered, sorted, grouped, with columns chosen from the
// specs and the final metrics and a selection to compare. Every choice lives in the URL
// (#/jobs?cols=...&group=...&sort=...&q=...), so a link reopens the same table.
import type { JSX } from "preact";
import { useMemo, useState } from "preact/hooks";
import { getQueue, listDatasets, listJobs } from "../api";
import { architecture, distinguishing, drShort, finalAccuracy, flatten, fmtAgo, fmtDuration, fmtNum, fmtPct, jobDuration,
  jobTitle, parseTime, shortId, show } from "../format";
import { finalShown } from "../metrics";
import { JOB_STATUSES } from "../names";
import { listParam, navigate, setQuery, usePoll, useRoute } from "../route";
import type { Job } from "../types";
import { waitingForSlot } from "../types";
import { ErrorBox, Progress, StatusBadge, Tags } from "../ui";

const STATUSES = ["", ...JOB_STATUSES];
const POLL_MS = 3000;
// The most waiting jobs GET /v1/queue lists in one answer: the list marks those with their place.
const QUEUE_LIMIT = 1000;
const DEFAULT_COLUMNS = ["status", "progress", "dataset", "model", "accuracy", "duration", "created"];

interface Column {
  key: string;
  label: string;
  /** What the column sorts, groups and averages by. */
  value: (j: Job) => unknown;
  cell: (j: Job) => JSX.Element | string;
  numeric?: boolean;
  /** How a group row shows this column's mean ± std; a column without one (a spec field: a
   * setting, not a result) shows the values its group holds. */
  stat?: (v: number) => string;
}

type Names = Record<string, string>;
/** Job id -> its place in the tenant's queue, for the listed jobs that wait for a running slot. */
type Places = Map<string, number>;

function builtinColumns(names: Names, now: number, places: Places): Column[] {
  return [
    { key: "status", label: "Status", value: (j) => j.status,
      cell: (j) => <><StatusBadge status={j.status} /><QueueMark job={j} places={places} />
        {j.status_reason && <div class="muted small reason" title={j.status_reason}>{j.status_reason}</div>}</> },
    { key: "progress", label: "Progress", value: (j) => j.progress, numeric: true, stat: fmtPct,
      cell: (j) => <><Progress value={j.progress} /><div class="muted small">{phaseText(j)}</div></> },
    { key: "dataset", label: "Dataset", value: (j) => names[j.dataset_id] ?? j.dataset_id,
      cell: (j) => <span title={j.dataset_id}>{names[j.dataset_id] ?? j.dataset_id}</span> },
    { key: "model", label: "Model · DR", value: (j) => `${architecture(j.spec)} ${drShort(j.spec)}`,
      cell: (j) => <><span class="mono">{architecture(j.spec)}</span><div class="muted small">{drShort(j.spec)}</div></> },
    { key: "accuracy", label: "Accuracy", value: (j) => finalAccuracy(j), numeric: true, stat: fmtPct, cell: (j) => fmtPct(finalAccuracy(j)) },
    { key: "duration", label: "Duration", value: (j) => jobDuration(j, now), numeric: true, stat: fmtDuration,
      cell: (j) => fmtDuration(jobDuration(j, now)) },
    { key: "created", label: "Created", value: (j) => parseTime(j.created_at) ?? 0,
      cell: (j) => <span class="muted small" title={j.created_at}>{fmtAgo(j.created_at, now)}</span> },
  ];
}

/** "· #3" beside a job waiting for a running slot (its place in the queue, next first). */
function QueueMark({ job, places }: { job: Job; places: Places }) {
  if (!waitingForSlot(job)) return null;
  const place = places.get(job.id);
  return <span class="muted small queue-place" title="waiting for a running slot: its place in your queue">
    {place ? ` · #${place}` : " · waiting"}</span>;
}

const specColumn = (path: string): Column => ({
  key: `spec.${path}`, label: path,
  value: (j) => specValue(j, path),
  cell: (j) => show(specValue(j, path)),
  numeric: true,
});

function specValue(j: Job, path: string): unknown {
  const v = flatten(j.spec ?? {})[path];
  return Array.isArray(v) ? v.join("-") : v;
}

const resultColumn = (key: string): Column => ({
  key: `result.${key}`, label: finalShown(key, 0)[0],
  value: (j) => j.result?.[key],
  cell: (j) => (typeof j.result?.[key] === "number" ? finalShown(key, j.result[key])[1] : ""),
  numeric: true,
  stat: (v) => finalShown(key, v)[1],
});

/** Every column a person can choose: the built-in ones, each spec field and each final metric
 * that the listed jobs hold. */
function allColumns(jobs: Job[], names: Names, now: number, places: Places): Column[] {
  const specPaths = new Set<string>();
  const results = new Set<string>();
  for (const j of jobs) {
    for (const [k, v] of Object.entries(flatten(j.spec ?? {}))) if (v === null || typeof v !== "object" || Array.isArray(v)) specPaths.add(k);
    for (const [k, v] of Object.entries(j.result ?? {})) if (typeof v === "number") results.add(k);
  }
  return [...builtinColumns(names, now, places), ...[...specPaths].sort().map(specColumn), ...[...results].sort().map(resultColumn)];
}

function compareValues(a: unknown, b: unknown): number {
  const missing = (v: unknown) => v === null || v === undefined;
  if (missing(a) || missing(b)) return missing(a) ? (missing(b) ? 0 : -1) : 1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/** Mean ± sample std (0 for one value) of a column's numbers in a group, as the sweep summary. */
export function meanStd(values: unknown[]): { mean: number; std: number; n: number } | null {
  const xs = values.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  if (!xs.length) return null;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.length > 1 ? xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1) : 0;
  return { mean, std: Math.sqrt(variance), n: xs.length };
}

export function JobsPage() {
  const route = useRoute();
  const q = route.query;
  const tag = q.get("tag") ?? "";
  const status = q.get("status") ?? "";
  const search = q.get("q") ?? "";
  const sortParam = q.get("sort") ?? "-created";
  const sort = { key: sortParam.replace(/^-/, ""), desc: sortParam.startsWith("-") };
  const chosen = q.has("cols") ? listParam(q, "cols") : DEFAULT_COLUMNS;
  const group = q.get("group") ?? "";
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [pages, setPages] = useState(1);
  const [error, setError] = useState<unknown>(null);
  const [selected, setSelected] = useState<string[]>([]);
  const [names, setNames] = useState<Names>({});
  const [now, setNow] = useState(Date.now());
  const [places, setPlaces] = useState<Places>(new Map());

  usePoll(async () => {
    let token: string | null = null;
    const all: Job[] = [];
    for (let i = 0; i < pages; i++) {
      const page = await listJobs({ status, tag, pageSize: 100, pageToken: token });
      all.push(...page.items);
      token = page.next;
      if (!token) break;
    }
    // One read of the queue per refresh, and none while no listed job waits in it; a failed
    // read costs the marks, not the list.
    const queue = all.some(waitingForSlot) ? await getQueue({ limit: QUEUE_LIMIT }).catch(() => null) : null;
    setPlaces(new Map(queue?.items.map((i) => [i.job_id, i.position])));
    setJobs(all);
    setNext(token);
    setNow(Date.now());
    setError(null);
  }, POLL_MS, [tag, status, pages]);

  usePoll(async () => {
    const ds = await listDatasets();
    setNames(Object.fromEntries(ds.map((d) => [d.id, d.name])));
  }, 30_000, []);

  const columns = useMemo(() => allColumns(jobs ?? [], names, now, places), [jobs, names, now, places]);
  const byKey = new Map(columns.map((c) => [c.key, c]));
  const shownColumns = chosen.map((k) => byKey.get(k)).filter((c): c is Column => Boolean(c));
  const groupColumn = byKey.get(group) ?? null;

  const shown = useMemo(() => {
    let list = (jobs ?? []).filter((j) => !tag || !j.tags || j.tags.includes(tag));
    const needle = search.trim().toLowerCase();
    if (needle) {
      list = list.filter((j) => [j.id, j.name ?? "", j.dataset_id, names[j.dataset_id] ?? "", ...(j.tags ?? []), drShort(j.spec), j.status]
        .some((s) => s.toLowerCase().includes(needle)));
    }
    const col = byKey.get(sort.key) ?? (sort.key === "name" ? { value: (j: Job) => jobTitle(j).toLowerCase() } : byKey.get("created")!);
    return [...list].sort((a, b) => (sort.desc ? -1 : 1) * compareValues(col.value(a), col.value(b)));
  }, [jobs, search, sortParam, names, tag, now, columns]);

  // Jobs that share a name (a sweep's) are told apart by the spec fields that differ among them.
  const telling = useMemo(() => {
    const byName = new Map<string, Job[]>();
    for (const j of shown) byName.set(jobTitle(j), [...(byName.get(jobTitle(j)) ?? []), j]);
    const out = new Map<string, string>();
    for (const same of byName.values()) {
      if (same.length < 2) continue;
      const fields = distinguishing(same, 3, names);
      for (const j of same) out.set(j.id, fields(j));
    }
    return out;
  }, [shown, names]);

  const groups = useMemo(() => {
    if (!groupColumn) return [{ key: "", jobs: shown }];
    const by = new Map<string, Job[]>();
    for (const j of shown) {
      const k = show(groupColumn.value(j) ?? null);
      by.set(k, [...(by.get(k) ?? []), j]);
    }
    return [...by.entries()].map(([key, js]) => ({ key, jobs: js }));
  }, [shown, group]);

  const toggle = (id: string) => setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s, id]));
  const setColumns = (keys: string[]) => setQuery({ cols: keys.join(",") || "none" });
  const header = (key: string, label: string) => (
    <th class="sortable" data-col={key} aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}
      onClick={() => setQuery({ sort: `${(sort.key === key ? !sort.desc : key !== "name" && key !== "dataset") ? "-" : ""}${key}` })}>
      {label}{sort.key === key ? (sort.desc ? " ▾" : " ▴") : ""}
    </th>
  );
  const row = (j: Job) => (
    <tr key={j.id} data-job-id={j.id} data-status={j.status} class={selected.includes(j.id) ? "selected" : ""}>
      <td><input type="checkbox" aria-label={`select ${jobTitle(j)}`} checked={selected.includes(j.id)} onChange={() => toggle(j.id)} /></td>
      <td>
        <a href={`#/jobs/${j.id}`} class="job-link">{jobTitle(j)}</a>
        {j.name && <span class="muted small mono"> {shortId(j.id)}</span>}
        {(j.warnings?.length ?? 0) > 0 && <span class="warn-icon" title={j.warnings!.join("\n")}> ⚠</span>}
        {j.sweep_id && <a class="muted small" href={`#/sweeps/${j.sweep_id}`}> sweep</a>}
        {telling.get(j.id) && <div class="muted small mono telling">{telling.get(j.id)}</div>}
        <div><Tags tags={j.tags} /></div>
      </td>
      {shownColumns.map((c) => <td class={c.numeric ? "num" : ""} data-col={c.key}>{c.cell(j)}</td>)}
    </tr>
  );
  const groupRow = (key: string, js: Job[]) => (
    <tr class="group" data-group={key}>
      <td />
      <td>{groupColumn!.label} = <span class="mono">{key}</span> <span class="muted small">({js.length} run{js.length === 1 ? "" : "s"})</span></td>
      {shownColumns.map((c) => {
        if (c.key === group || !c.numeric) return <td data-col={c.key} />;
        if (!c.stat) {
          const values = [...new Set(js.map((j) => show(c.value(j) ?? null)))];
          return <td class="num muted" data-col={c.key}>{values.length <= 4 ? values.join(", ") : `${values.length} values`}</td>;
        }
        const stats = meanStd(js.map(c.value));
        return <td class="num" data-col={c.key}>{stats ? `${c.stat(stats.mean)} ± ${c.stat(stats.std)}` : ""}</td>;
      })}
    </tr>
  );

  return (
    <div>
      <div class="page-head">
        <h1>Jobs</h1>
        <span class="spacer" />
        <button disabled={selected.length < 2} onClick={() => navigate(`#/compare?ids=${selected.join(",")}`)} id="compare-selected">
          Compare selected ({selected.length})
        </button>
        <a class="button primary" href="#/submit">New job</a>
      </div>
      <div class="filters">
        <input type="search" placeholder="Search name, id, dataset, tag…" value={search} aria-label="Search"
          onInput={(e) => setQuery({ q: (e.target as HTMLInputElement).value })} />
        <label>Status <select value={status} aria-label="Status filter" onChange={(e) => setQuery({ status: (e.target as HTMLSelectElement).value })}>
          {STATUSES.map((s) => <option value={s}>{s || "any"}</option>)}
        </select></label>
        <label>Tag <input value={tag} size={12} aria-label="Tag filter" placeholder="any"
          onChange={(e) => setQuery({ tag: (e.target as HTMLInputElement).value.trim() })} /></label>
        <label>Group by <select id="group-by" value={group} onChange={(e) => setQuery({ group: (e.target as HTMLSelectElement).value })}>
          <option value="">—</option>
          {columns.filter((c) => c.key !== "progress" && c.key !== "created" && c.key !== "duration")
            .map((c) => <option value={c.key}>{c.key.startsWith("spec.") ? c.label : c.label}</option>)}
        </select></label>
        <span class="muted small">{jobs ? `${shown.length} of ${jobs.length} shown · updates every ${POLL_MS / 1000}s` : "loading…"}</span>
      </div>
      <details class="card" id="columns-picker">
        <summary>Columns ({shownColumns.length})</summary>
        {[["Job", (c: Column) => !c.key.includes(".")], ["Spec", (c: Column) => c.key.startsWith("spec.")],
          ["Final metrics", (c: Column) => c.key.startsWith("result.")]].map(([title, pick]) => (
          <div>
            <div class="small strong">{title as string}</div>
            <div class="columns">
              {columns.filter(pick as (c: Column) => boolean).map((c) => (
                <label><input type="checkbox" data-column={c.key} checked={chosen.includes(c.key)}
                  onChange={() => setColumns(chosen.includes(c.key) ? chosen.filter((k) => k !== c.key) : [...chosen.filter((k) => k !== "none"), c.key])} />
                  <span class={c.key.startsWith("spec.") ? "mono" : ""}>{c.key.startsWith("result.") ? `${c.label} (${c.key.slice(7)})` : c.label}</span></label>
              ))}
            </div>
          </div>
        ))}
        <p><button class="small" onClick={() => setQuery({ cols: null })}>Default columns</button></p>
      </details>
      <ErrorBox error={error} />
      <table class="jobs" id="jobs-table">
        <thead>
          <tr>
            <th />
            {header("name", "Job")}
            {shownColumns.map((c) => header(c.key, c.label))}
          </tr>
        </thead>
        <tbody>
          {groups.map((g) => (
            <>
              {groupColumn && groupRow(g.key, g.jobs)}
              {g.jobs.map(row)}
            </>
          ))}
        </tbody>
      </table>
      {jobs && !shown.length && <p class="muted empty">No jobs{status || tag || search ? " match these filters" : " yet"}. <a href="#/submit">Submit one.</a></p>}
      {next && <button onClick={() => setPages((p) => p + 1)}>Load more</button>}
    </div>
  );
}

export function phaseText(j: Job): string {
  if (!j.phase) return "";
  if (j.phase === "pretrain") return `pretraining layer ${j.layer ?? 0}, epoch ${j.epoch ?? 0}`;
  if (j.phase === "finetune") return `fine-tuning epoch ${j.epoch ?? 0}`;
  return j.phase;
}

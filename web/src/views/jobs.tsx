// The jobs list: live (polled), filtered, sorted, with a selection to compare.
import { useMemo, useState } from "preact/hooks";
import { listDatasets, listJobs } from "../api";
import { architecture, drShort, finalAccuracy, fmtAgo, fmtDuration, fmtPct, jobDuration, jobTitle, parseTime, shortId } from "../format";
import { JOB_STATUSES } from "../names";
import { navigate, usePoll, useRoute } from "../route";
import type { Job } from "../types";
import { ErrorBox, Progress, StatusBadge, Tags } from "../ui";

const STATUSES = ["", ...JOB_STATUSES];
type SortKey = "created" | "name" | "status" | "progress" | "accuracy" | "duration" | "dataset";
const POLL_MS = 3000;

export function JobsPage() {
  const route = useRoute();
  const tag = route.query.get("tag") ?? "";
  const status = route.query.get("status") ?? "";
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [pages, setPages] = useState(1);
  const [error, setError] = useState<unknown>(null);
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "created", desc: true });
  const [selected, setSelected] = useState<string[]>([]);
  const [names, setNames] = useState<Record<string, string>>({});
  const [now, setNow] = useState(Date.now());

  usePoll(async () => {
    let token: string | null = null;
    const all: Job[] = [];
    for (let i = 0; i < pages; i++) {
      const page = await listJobs({ status, tag, pageSize: 100, pageToken: token });
      all.push(...page.items);
      token = page.next;
      if (!token) break;
    }
    setJobs(all);
    setNext(token);
    setNow(Date.now());
    setError(null);
  }, POLL_MS, [tag, status, pages]);

  usePoll(async () => {
    const ds = await listDatasets();
    setNames(Object.fromEntries(ds.map((d) => [d.id, d.name])));
  }, 30_000, []);

  const setQuery = (k: string, v: string) => {
    const q = new URLSearchParams(route.query);
    if (v) q.set(k, v);
    else q.delete(k);
    const s = q.toString();
    navigate(`#/jobs${s ? `?${s}` : ""}`);
  };

  const shown = useMemo(() => {
    let list = (jobs ?? []).filter((j) => !tag || !j.tags || j.tags.includes(tag));
    const needle = search.trim().toLowerCase();
    if (needle) {
      list = list.filter((j) => [j.id, j.name ?? "", j.dataset_id, names[j.dataset_id] ?? "", ...(j.tags ?? []), drShort(j.spec), j.status]
        .some((s) => s.toLowerCase().includes(needle)));
    }
    const value = (j: Job): number | string => {
      switch (sort.key) {
        case "name": return jobTitle(j).toLowerCase();
        case "status": return j.status;
        case "progress": return j.progress;
        case "accuracy": return finalAccuracy(j) ?? -1;
        case "duration": return jobDuration(j, now) ?? -1;
        case "dataset": return names[j.dataset_id] ?? j.dataset_id;
        default: return parseTime(j.created_at) ?? 0;
      }
    };
    return [...list].sort((a, b) => {
      const va = value(a), vb = value(b);
      const c = va < vb ? -1 : va > vb ? 1 : 0;
      return sort.desc ? -c : c;
    });
  }, [jobs, search, sort, names, tag, now]);

  const toggle = (id: string) => setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s, id]));
  const header = (key: SortKey, label: string) => (
    <th class="sortable" aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}
      onClick={() => setSort((s) => ({ key, desc: s.key === key ? !s.desc : key !== "name" && key !== "dataset" }))}>
      {label}{sort.key === key ? (sort.desc ? " ▾" : " ▴") : ""}
    </th>
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
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        <label>Status <select value={status} aria-label="Status filter" onChange={(e) => setQuery("status", (e.target as HTMLSelectElement).value)}>
          {STATUSES.map((s) => <option value={s}>{s || "any"}</option>)}
        </select></label>
        <label>Tag <input value={tag} size={12} aria-label="Tag filter" placeholder="any"
          onChange={(e) => setQuery("tag", (e.target as HTMLInputElement).value.trim())} /></label>
        <span class="muted small">{jobs ? `${shown.length} of ${jobs.length} shown · updates every ${POLL_MS / 1000}s` : "loading…"}</span>
      </div>
      <ErrorBox error={error} />
      <table class="jobs" id="jobs-table">
        <thead>
          <tr>
            <th />
            {header("name", "Job")}
            {header("status", "Status")}
            {header("progress", "Progress")}
            {header("dataset", "Dataset")}
            <th>Model · DR</th>
            {header("accuracy", "Accuracy")}
            {header("duration", "Duration")}
            {header("created", "Created")}
          </tr>
        </thead>
        <tbody>
          {shown.map((j) => (
            <tr key={j.id} data-job-id={j.id} data-status={j.status} class={selected.includes(j.id) ? "selected" : ""}>
              <td><input type="checkbox" aria-label={`select ${jobTitle(j)}`} checked={selected.includes(j.id)} onChange={() => toggle(j.id)} /></td>
              <td>
                <a href={`#/jobs/${j.id}`} class="job-link">{jobTitle(j)}</a>
                {j.name && <span class="muted small mono"> {shortId(j.id)}</span>}
                {(j.warnings?.length ?? 0) > 0 && <span class="warn-icon" title={j.warnings!.join("\n")}> ⚠</span>}
                {j.sweep_id && <a class="muted small" href={`#/sweeps/${j.sweep_id}`}> sweep</a>}
                <div><Tags tags={j.tags} /></div>
              </td>
              <td><StatusBadge status={j.status} />{j.status_reason && <div class="muted small reason" title={j.status_reason}>{j.status_reason}</div>}</td>
              <td><Progress value={j.progress} /><div class="muted small">{phaseText(j)}</div></td>
              <td title={j.dataset_id}>{names[j.dataset_id] ?? j.dataset_id}</td>
              <td><span class="mono">{architecture(j.spec)}</span><div class="muted small">{drShort(j.spec)}</div></td>
              <td class="num">{fmtPct(finalAccuracy(j))}</td>
              <td class="num">{fmtDuration(jobDuration(j, now))}</td>
              <td class="muted small" title={j.created_at}>{fmtAgo(j.created_at, now)}</td>
            </tr>
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

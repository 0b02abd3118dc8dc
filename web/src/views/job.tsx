// One job: live charts from the event stream, spec, attempts, checkpoints and actions.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, cancelJob, deleteJob, download, getJob, getQueue, getSettings, listCheckpoints, listDatasets, streamEvents } from "../api";
import { Chart, type ChartData } from "../chart";
import { ChartControls, ChartViewContext, useChartView, type XAxis } from "../chartview";
import { architecture, drShort, fmtBytes, fmtDuration, fmtNum, fmtTime, jobDuration, jobTitle, parseTime } from "../format";
import { drOn, finalShown, finetuneChart, gradientChart, gradientTitle, merge, PRETRAIN_CHARTS, pretrainChart, pretrainLayers,
  xOf, yTitle } from "../metrics";
import type { JobStatus, PretrainMetric } from "../names";
import { navigate, usePoll } from "../route";
import type { Checkpoint, Job, MetricPoint, QueueState, ServerSettings } from "../types";
import { TERMINAL, waitingForSlot } from "../types";
import { Confirm, ErrorBox, errorMessage, Progress, Section, StatusBadge, Tags } from "../ui";
import { phaseText } from "./jobs";
import { JobLogs } from "./logs";
import { SystemCharts } from "./system";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// The queue moves when another job ends, which this job's event stream does not tell: polled
// as often as the jobs list polls.
const QUEUE_POLL_MS = 3000;

/** Metric points of a job, live: the SSE stream (resumed after the last seq on a drop). */
export function useJobStream(id: string, onJob: (j: Job) => void) {
  const points = useRef<MetricPoint[]>([]);
  const seen = useRef(new Set<number>());
  const [version, setVersion] = useState(0);
  const [streamError, setStreamError] = useState<unknown>(null);
  const [live, setLive] = useState(false);

  useEffect(() => {
    const ctl = new AbortController();
    let pending: MetricPoint[] = [];
    let timer = 0;
    const flush = () => {
      timer = 0;
      if (merge(points.current, seen.current, pending)) setVersion((v) => v + 1);
      pending = [];
    };
    (async () => {
      let failures = 0;
      while (!ctl.signal.aborted) {
        let terminal = false;
        const last = points.current.reduce((m, p) => Math.max(m, p.seq), 0);
        try {
          setLive(true);
          await streamEvents(id, last, {
            metric(p) {
              pending.push(p);
              if (!timer) timer = window.setTimeout(flush, 150);
            },
            status(j) {
              terminal = TERMINAL.has(j.status);
              onJob(j);
            },
          }, ctl.signal);
          failures = 0;
          setStreamError(null);
        } catch (err) {
          if (ctl.signal.aborted) return;
          if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
            setStreamError(err);
            return;
          }
          failures++;
          setStreamError(err);
        } finally {
          clearTimeout(timer);
          flush();
          setLive(false);
        }
        if (terminal) return;
        await sleep(Math.min(10_000, 500 * 2 ** failures));
      }
    })();
    return () => {
      ctl.abort();
      clearTimeout(timer);
    };
  }, [id]);

  return { points: points.current, version, live, streamError };
}

function laterOf(prev: Job | null, next: Job): Job {
  return prev && TERMINAL.has(prev.status) && !TERMINAL.has(next.status) ? prev : next;
}

/** What a chart without points says, by the job's status. */
export function emptyText(status: JobStatus): string {
  switch (status) {
    case "queued": return "queued: training has not started";
    case "cancelled": return "cancelled before this chart's first point";
    case "failed": return "failed before this chart's first point (see the status reason)";
    case "succeeded": return "no points were recorded";
    default: return "waiting for the first epoch…";
  }
}

/** When checkpoints are written, as this server is set up. */
function cadenceText(c: ServerSettings | null): string {
  if (!c) return "a running job stores one from time to time, and one at the end of each pretraining layer.";
  const epochs = c.checkpoint_every_epochs === 1 ? "every epoch" : `every ${c.checkpoint_every_epochs} epochs`;
  const time = c.checkpoint_every_seconds > 0 ? ` or ${fmtNum(c.checkpoint_every_seconds)} s, whichever comes first,` : "";
  return `a running job stores one ${epochs}${time} and at the end of each pretraining layer.`;
}

/** What a cancel the person asked for has come to, from the job's status now (never stale). */
function cancelNotice(job: Job): string {
  if (job.status === "cancelled") return "Cancelled.";
  if (TERMINAL.has(job.status)) return `The job ${job.status} before the cancel took effect.`;
  return "Cancel requested: the job stops within one batch.";
}

/** What a queued job waits for; while it waits for a running slot, its place in the tenant's
 * queue, polled. `onLeft` is called when the queue no longer holds it (dispatched or
 * cancelled since the job was read), so the page reads the job again. */
function QueuePlace({ job, onLeft }: { job: Job; onLeft: () => void }) {
  const waiting = waitingForSlot(job);
  const [queue, setQueue] = useState<QueueState | null>(null);
  usePoll(async (signal) => {
    if (!waiting) return;
    const q = await getQueue({ jobId: job.id, signal });
    setQueue(q);
    if (q.position === null) onLeft();
  }, QUEUE_POLL_MS, [job.id, waiting]);
  if (!waiting) {
    return <p class="notice" id="job-queue" data-state="dispatched">
      Waiting for a worker: this job holds one of your running slots and starts when a worker is free.</p>;
  }
  if (!queue || queue.position === null) {
    return <p class="notice" id="job-queue" data-state="waiting">Waiting for a running slot in your queue…</p>;
  }
  return (
    <p class="notice" id="job-queue" data-state="waiting" data-position={queue.position} data-waiting={queue.waiting}>
      Waiting for a running slot — position {queue.position} of {queue.waiting} in your queue; {queue.dispatched} of {queue.running_limit} slots in use.
    </p>
  );
}

interface Notice {
  text: string;
  error?: boolean;
}

function useJobCharts(job: Job | null, points: MetricPoint[], version: number, axis: XAxis) {
  const spec = job?.spec ?? {};
  const start = parseTime(job?.started_at) ?? (points.length ? parseTime(points[0].at) : null);
  return useMemo(() => {
    const at = xOf(axis, start, points);
    const layers = pretrainLayers(points, spec);
    const present = new Set(points.filter((p) => p.phase === "pretrain").map((p) => p.name));
    const expected = new Set<PretrainMetric>(["recon_error", "dr", "cross_group_divergence"]);
    if ((spec.validation_fraction ?? 0.1) > 0) expected.add("free_energy_gap");
    // dr_pairs_per_batch is drawn only once present: jobs trained before it was recorded
    // would otherwise show an empty chart for ever
    if (!drOn(spec, "pretrain")) { present.delete("dr"); expected.delete("dr"); }
    const pre = spec.pretrain
      ? PRETRAIN_CHARTS.filter(([name]) => present.has(name) || expected.has(name))
        .map(([name, title]) => ({ name, title, yLabel: yTitle(name), log: false, data: pretrainChart(points, layers, name, at) }))
      : [];
    const ft = spec.finetune ? [
      { name: "loss", title: "Loss", yLabel: yTitle("train_loss"), log: false,
        data: finetuneChart(points, [["train_loss", "train"], ["val_loss", "validation", true]], at) },
      { name: "accuracy", title: "Accuracy", yLabel: yTitle("train_accuracy"), log: false,
        data: finetuneChart(points, [["train_accuracy", "train"], ["val_accuracy", "validation", true]], at) },
      ...(drOn(spec, "finetune")
        ? [{ name: "dr", title: "DR value (discriminative)", yLabel: yTitle("dr"), log: false, data: finetuneChart(points, [["dr", "DR"]], at) }] : []),
      { name: "grad_norm", title: gradientTitle(points, spec), yLabel: yTitle("grad_norm.layer0"), log: true, data: gradientChart(points, spec, at) },
    ] : [];
    // every point is this job's: its exported rows say so
    const ofJob = <C extends { data: ChartData }>(c: C): C =>
      ({ ...c, data: { ...c.data, rows: c.data.rows?.map((r) => ({ ...r, job: r.job ?? job?.id })) } });
    return { pre: pre.map(ofJob), ft: ft.map(ofJob) };
  }, [version, job?.spec, job?.id, axis, start]);
}

export function JobPage({ id }: { id: string }) {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<Notice | null>(null);
  const [cancelSent, setCancelSent] = useState(false);
  const [busy, setBusy] = useState("");
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [cadence, setCadence] = useState<ServerSettings | null>(null);
  const [allCheckpoints, setAllCheckpoints] = useState(false);
  const [datasetName, setDatasetName] = useState("");
  const { points, version, live, streamError } = useJobStream(id, (j) => setJob((prev) => laterOf(prev, j)));
  const view = useChartView();

  // Answers arrive in any order (the event stream, the first GET, a cancel's reply): a job
  // already seen in a terminal status never goes back to an earlier one.
  const showJob = (next: Job) => setJob((prev) => laterOf(prev, next));

  useEffect(() => {
    getJob(id).then(showJob, setError);
    getSettings().then(setCadence, () => {});
  }, [id]);

  useEffect(() => {
    if (!job?.dataset_id) return;
    listDatasets().then((ds) => setDatasetName(ds.find((d) => d.id === job.dataset_id)?.name ?? ""), () => {});
  }, [job?.dataset_id]);

  // Checkpoints appear at each epoch and layer: refresh when the job moves.
  const moved = job ? `${job.status}/${job.phase}/${job.layer}/${job.epoch}/${job.attempt}` : "";
  useEffect(() => {
    if (!job) return;
    listCheckpoints(id).then(setCheckpoints, () => {});
  }, [moved]);

  const charts = useJobCharts(job, points, version, view.x);

  if (error) {
    return <div><p><a href="#/jobs">← Jobs</a></p><ErrorBox error={error} /></div>;
  }
  if (!job) return <p class="muted">Loading job…</p>;

  const spec = job.spec ?? {};
  const active = !TERMINAL.has(job.status);
  const canCancel = job.status === "queued" || job.status === "running";
  const result = job.result ?? {};
  const empty = emptyText(job.status);

  async function act(label: string, fn: () => Promise<string | void>) {
    setBusy(label);
    setNotice(null);
    try {
      const msg = await fn();
      if (msg) setNotice({ text: msg });
    } catch (err) {
      setNotice({ text: `${label} failed: ${errorMessage(err)}`, error: true });
    } finally {
      setBusy("");
    }
  }
  const cancel = () => act("Cancel", async () => {
    showJob(await cancelJob(job.id));
    setCancelSent(true);
  });
  const remove = () => act("Delete", async () => {
    await deleteJob(job.id);
    navigate("#/jobs");
  });
  const downloadModel = () => act("Download", async () => {
    const size = await download(`/v1/jobs/${job.id}/model`, `${job.id}.safetensors`);
    return `Downloaded the model (${fmtBytes(size)}).`;
  });
  const downloadCheckpoint = (ck: Checkpoint) => act("Download", async () => {
    const name = `${job.id}-${ck.kind}-${ck.phase ?? "model"}-${ck.layer ?? "head"}-${ck.epoch ?? 0}.safetensors`;
    const size = await download(`/v1/jobs/${job.id}/checkpoints/${ck.id}`, name);
    return `Downloaded checkpoint ${name} (${fmtBytes(size)}).`;
  });
  const shownNotice: Notice | null = notice ?? (cancelSent ? { text: cancelNotice(job) } : null);

  return (
    <div class="job-page" data-job-id={job.id}>
      <p class="crumbs"><a href="#/jobs">← Jobs</a>{job.sweep_id && <> · <a href={`#/sweeps/${job.sweep_id}`}>its sweep</a></>}</p>
      <div class="page-head">
        <h1>{jobTitle(job)}</h1>
        <StatusBadge status={job.status} />
        <Tags tags={job.tags} />
        <span class="spacer" />
        {canCancel && (
          <Confirm id="cancel-job" label="Cancel" question="Cancel this job? Training stops within one batch."
            yes="Yes, cancel it" disabled={!!busy || !!job.cancel_requested} onConfirm={cancel} />
        )}
        {job.status === "succeeded" && <button id="download-model" class="primary" disabled={!!busy} onClick={downloadModel}>Download model</button>}
        <button id="resubmit" onClick={() => navigate(`#/submit?from=${job.id}`)}>Re-submit with changes</button>
        <a class="button" href={`#/compare?ids=${job.id}`}>Compare…</a>
        {!active && (
          <Confirm id="delete-job" label="Delete" question="Delete this job, its metrics and its model? This cannot be undone."
            yes="Yes, delete it" disabled={!!busy} onConfirm={remove} />
        )}
      </div>
      {shownNotice && <p class={shownNotice.error ? "error" : "notice"} role="status" id="job-notice">{shownNotice.text}</p>}
      {job.status === "queued" && <QueuePlace job={job} onLeft={() => getJob(id).then(showJob, () => {})} />}
      {(job.warnings?.length ?? 0) > 0 && (
        <div class="warnings" id="job-warnings">{job.warnings!.map((w) => <p>⚠ {w}</p>)}</div>
      )}
      <div class="summary card">
        <div><span class="label">Progress</span><Progress value={job.progress} /> <span class="muted small">{phaseText(job)}</span></div>
        <div><span class="label">Dataset</span><span id="job-dataset" title={job.dataset_id}>{datasetName || job.dataset_id}</span>
          {datasetName && datasetName !== job.dataset_id && <span class="muted small mono"> {job.dataset_id}</span>}</div>
        <div><span class="label">Model</span><span class="mono">{architecture(spec)}</span> · {drShort(spec)}</div>
        <div><span class="label">Attempt</span>{job.attempt} of {job.max_attempts}</div>
        <div><span class="label">Duration</span>{fmtDuration(jobDuration(job))}</div>
        <div><span class="label">Created</span>{fmtTime(job.created_at)}</div>
        {job.status_reason && <div class="wide"><span class="label">Status reason</span><span id="status-reason">{job.status_reason}</span></div>}
        {result.resumed_from && <div class="wide"><span class="label">Resumed from</span><span class="mono small">{result.resumed_from}</span></div>}
        <div class="wide muted small">{live ? "● live: updates stream from the server" : active ? "reconnecting…" : `${points.length} metric points`}{job.id && <span class="mono"> · {job.id}</span>}</div>
      </div>
      {streamError ? <ErrorBox error={streamError} /> : null}

      <ChartViewContext.Provider value={view}>
        {(charts.pre.length > 0 || charts.ft.length > 0) && <ChartControls view={view} />}
        {charts.pre.length > 0 && (
          <Section title="Pretraining (per layer)">
            <div class="charts">
              {charts.pre.map((c) => <Chart key={c.name} testid={`chart-pretrain-${c.name}`} title={c.title} yLabel={c.yLabel} data={c.data} empty={empty} />)}
            </div>
          </Section>
        )}
        {charts.ft.length > 0 && (
          <Section title="Fine-tuning">
            <div class="charts">
              {charts.ft.map((c) => <Chart key={c.name} testid={`chart-finetune-${c.name}`} title={c.title} yLabel={c.yLabel} data={c.data} log={c.log} empty={empty} />)}
            </div>
          </Section>
        )}
      </ChartViewContext.Provider>

      <SystemCharts points={points} version={version} />
      <JobLogs job={job} />

      <FinalMetrics result={result} />

      <Section title={`Checkpoints (${checkpoints.length})`}>
        {checkpoints.length ? (
          <table id="checkpoints">
            <thead><tr><th>Kind</th><th>Phase</th><th>Layer</th><th>Epoch</th><th>Attempt</th><th>Size</th><th>Created</th><th /></tr></thead>
            <tbody>
              {shownCheckpoints(checkpoints, allCheckpoints).map((ck) => (
                <tr key={ck.id}>
                  <td>{ck.kind}</td><td>{ck.phase ?? ""}</td><td>{ck.layer ?? ""}</td><td>{ck.epoch ?? ""}</td>
                  <td>{ck.attempt}</td><td>{fmtBytes(ck.size_bytes)}</td><td class="small">{fmtTime(ck.created_at)}</td>
                  <td><button class="small" disabled={!!busy} onClick={() => downloadCheckpoint(ck)}>Download</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : <p class="muted" id="checkpoints-empty">None{active ? " yet" : ""}: {cadenceText(cadence)}</p>}
        {!allCheckpoints && shownCheckpoints(checkpoints, false).length < checkpoints.length && (
          <button class="small" onClick={() => setAllCheckpoints(true)}>Show all {checkpoints.length}</button>
        )}
      </Section>

      <Section title="Spec">
        <pre class="spec" id="job-spec">{JSON.stringify(spec, null, 2)}</pre>
      </Section>
    </div>
  );
}

/** The result's numbers with readable labels and units; the key stays beside each label. */
function FinalMetrics({ result }: { result: Record<string, unknown> }) {
  const rows = Object.entries(result).filter((e): e is [string, number] => typeof e[1] === "number");
  if (!rows.length) return null;
  return (
    <Section title="Final metrics">
      <table class="kv" id="final-metrics">
        <tbody>
          {rows.map(([k, v]) => {
            const [label, value] = finalShown(k, v);
            return <tr data-key={k}><th>{label} <span class="muted small mono">{k}</span></th><td class="num">{value}</td></tr>;
          })}
        </tbody>
      </table>
    </Section>
  );
}

/** Layer ends and the final model always; of the per-epoch ones, the last few. */
function shownCheckpoints(all: Checkpoint[], everything: boolean): Checkpoint[] {
  if (everything) return all;
  const epochs = all.filter((c) => c.kind === "epoch");
  const recent = new Set(epochs.slice(-8));
  return all.filter((c) => c.kind !== "epoch" || recent.has(c));
}

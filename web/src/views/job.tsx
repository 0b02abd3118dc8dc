// One job: live charts from the event stream, spec, attempts, checkpoints and actions.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, cancelJob, download, getJob, listCheckpoints, streamEvents } from "../api";
import { Chart } from "../chart";
import { architecture, drShort, fmtBytes, fmtDuration, fmtNum, fmtTime, jobDuration, jobTitle } from "../format";
import { finetuneChart, gradientChart, gradientTitle, merge, PRETRAIN_CHARTS, pretrainChart, pretrainLayers } from "../metrics";
import type { PretrainMetric } from "../names";
import { navigate } from "../route";
import type { Checkpoint, Job, MetricPoint } from "../types";
import { TERMINAL } from "../types";
import { ErrorBox, errorMessage, Progress, Section, StatusBadge, Tags } from "../ui";
import { phaseText } from "./jobs";
import { JobLogs } from "./logs";
import { SystemCharts } from "./system";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

export function JobPage({ id }: { id: string }) {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState("");
  const [busy, setBusy] = useState("");
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [allCheckpoints, setAllCheckpoints] = useState(false);
  const { points, version, live, streamError } = useJobStream(id, (j) => setJob((prev) => laterOf(prev, j)));

  // Answers arrive in any order (the event stream, the first GET, a cancel's reply): a job
  // already seen in a terminal status never goes back to an earlier one.
  const showJob = (next: Job) => setJob((prev) => laterOf(prev, next));

  useEffect(() => {
    getJob(id).then(showJob, setError);
  }, [id]);

  // Checkpoints appear at each epoch and layer: refresh when the job moves.
  const moved = job ? `${job.status}/${job.phase}/${job.layer}/${job.epoch}/${job.attempt}` : "";
  useEffect(() => {
    if (!job) return;
    listCheckpoints(id).then(setCheckpoints, () => {});
  }, [moved]);

  const spec = job?.spec ?? {};
  const charts = useMemo(() => {
    const layers = pretrainLayers(points, spec);
    const present = new Set(points.filter((p) => p.phase === "pretrain").map((p) => p.name));
    const expected = new Set<PretrainMetric>(["recon_error", "dr", "cross_group_divergence"]);
    if ((spec.validation_fraction ?? 0.1) > 0) expected.add("free_energy_gap");
    // dr_pairs_per_batch is drawn only once present: jobs trained before it was recorded
    // would otherwise show an empty chart for ever
    const pre = spec.pretrain
      ? PRETRAIN_CHARTS.filter(([name]) => present.has(name) || expected.has(name))
        .map(([name, title]) => ({ name, title, data: pretrainChart(points, layers, name) }))
      : [];
    const ft = spec.finetune ? [
      { name: "loss", title: "Loss", log: false, data: finetuneChart(points, [["train_loss", "train"], ["val_loss", "validation", true]]) },
      { name: "accuracy", title: "Accuracy", log: false, data: finetuneChart(points, [["train_accuracy", "train"], ["val_accuracy", "validation", true]]) },
      ...(spec.finetune.dr || points.some((p) => p.phase === "finetune" && p.name === "dr")
        ? [{ name: "dr", title: "DR value (discriminative)", log: false, data: finetuneChart(points, [["dr", "DR"]]) }] : []),
      { name: "grad_norm", title: gradientTitle(points, spec), log: true, data: gradientChart(points, spec) },
    ] : [];
    return { pre, ft };
  }, [version, job?.spec]);

  if (error) {
    return <div><p><a href="#/jobs">← Jobs</a></p><ErrorBox error={error} /></div>;
  }
  if (!job) return <p class="muted">Loading job…</p>;

  const active = !TERMINAL.has(job.status);
  const canCancel = job.status === "queued" || job.status === "running";
  const result = job.result ?? {};

  async function act(label: string, fn: () => Promise<string | void>) {
    setBusy(label);
    setNotice("");
    try {
      const msg = await fn();
      if (msg) setNotice(msg);
    } catch (err) {
      setNotice(`${label} failed: ${errorMessage(err)}`);
    } finally {
      setBusy("");
    }
  }
  const cancel = () => act("Cancel", async () => {
    const j = await cancelJob(job.id);
    showJob(j);
    return j.status === "cancelled" ? "Cancelled." : "Cancel requested: the job stops within one batch.";
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

  return (
    <div class="job-page" data-job-id={job.id}>
      <p class="crumbs"><a href="#/jobs">← Jobs</a>{job.sweep_id && <> · <a href={`#/sweeps/${job.sweep_id}`}>its sweep</a></>}</p>
      <div class="page-head">
        <h1>{jobTitle(job)}</h1>
        <StatusBadge status={job.status} />
        <Tags tags={job.tags} />
        <span class="spacer" />
        {canCancel && <button id="cancel-job" class="danger" disabled={!!busy || job.cancel_requested} onClick={cancel}>Cancel</button>}
        {job.status === "succeeded" && <button id="download-model" class="primary" disabled={!!busy} onClick={downloadModel}>Download model</button>}
        <button id="resubmit" onClick={() => navigate(`#/submit?from=${job.id}`)}>Re-submit with changes</button>
        <a class="button" href={`#/compare?ids=${job.id}`}>Compare…</a>
      </div>
      {notice && <p class="notice" role="status" id="job-notice">{notice}</p>}
      {(job.warnings?.length ?? 0) > 0 && (
        <div class="warnings" id="job-warnings">{job.warnings!.map((w) => <p>⚠ {w}</p>)}</div>
      )}
      <div class="summary card">
        <div><span class="label">Progress</span><Progress value={job.progress} /> <span class="muted small">{phaseText(job)}</span></div>
        <div><span class="label">Dataset</span><span class="mono">{job.dataset_id}</span></div>
        <div><span class="label">Model</span><span class="mono">{architecture(spec)}</span> · {drShort(spec)}</div>
        <div><span class="label">Attempt</span>{job.attempt} of {job.max_attempts}</div>
        <div><span class="label">Duration</span>{fmtDuration(jobDuration(job))}</div>
        <div><span class="label">Created</span>{fmtTime(job.created_at)}</div>
        {job.status_reason && <div class="wide"><span class="label">Status reason</span><span id="status-reason">{job.status_reason}</span></div>}
        {result.resumed_from && <div class="wide"><span class="label">Resumed from</span><span class="mono small">{result.resumed_from}</span></div>}
        <div class="wide muted small">{live ? "● live: updates stream from the server" : active ? "reconnecting…" : `${points.length} metric points`}{job.id && <span class="mono"> · {job.id}</span>}</div>
      </div>
      {streamError ? <ErrorBox error={streamError} /> : null}

      {charts.pre.length > 0 && (
        <Section title="Pretraining (per layer)">
          <div class="charts">
            {charts.pre.map((c) => <Chart key={c.name} testid={`chart-pretrain-${c.name}`} title={c.title} data={c.data} />)}
          </div>
        </Section>
      )}
      {charts.ft.length > 0 && (
        <Section title="Fine-tuning">
          <div class="charts">
            {charts.ft.map((c) => <Chart key={c.name} testid={`chart-finetune-${c.name}`} title={c.title} data={c.data} log={c.log} />)}
          </div>
        </Section>
      )}

      <SystemCharts points={points} version={version} />
      <JobLogs job={job} />

      {Object.keys(result).length > 0 && (
        <Section title="Final metrics">
          <table class="kv" id="final-metrics">
            <tbody>
              {Object.entries(result).filter(([, v]) => typeof v === "number").map(([k, v]) => (
                <tr><th>{k}</th><td class="num">{fmtNum(v)}</td></tr>
              ))}
            </tbody>
          </table>
        </Section>
      )}

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
        ) : <p class="muted">None yet: one is written after every epoch and layer.</p>}
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

/** Layer ends and the final model always; of the per-epoch ones, the last few. */
function shownCheckpoints(all: Checkpoint[], everything: boolean): Checkpoint[] {
  if (everything) return all;
  const epochs = all.filter((c) => c.kind === "epoch");
  const recent = new Set(epochs.slice(-8));
  return all.filter((c) => c.kind !== "epoch" || recent.has(c));
}

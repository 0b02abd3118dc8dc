// Datasets: upload (with a progress bar), list, delete.
import { useState } from "preact/hooks";
import { deleteDataset, listDatasets, uploadDataset, waitDataset } from "../api";
import { fmtAgo, fmtBytes, fmtNum } from "../format";
import { navigate, usePoll } from "../route";
import { type Dataset, datasetReady } from "../types";
import { ErrorBox, errorMessage, Section } from "../ui";

export function DatasetsPage() {
  const [items, setItems] = useState<Dataset[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [refresh, setRefresh] = useState(0);
  const [confirming, setConfirming] = useState("");
  const [notice, setNotice] = useState<{ text: string; error?: boolean } | null>(null);

  usePoll(async () => {
    setItems(await listDatasets());
    setError(null);
  }, 15_000, [refresh]);

  async function remove(d: Dataset) {
    if (confirming !== d.id) {
      setConfirming(d.id);
      return;
    }
    setConfirming("");
    try {
      await deleteDataset(d.id);
      setNotice({ text: `Deleted ${d.name}.` });
    } catch (err) {
      // the server's problem detail names what blocks it (the job that reads the dataset)
      setNotice({ text: `Could not delete ${d.name}: ${errorMessage(err)}`, error: true });
    }
    setRefresh((r) => r + 1);
  }

  return (
    <div>
      <div class="page-head"><h1>Datasets</h1></div>
      <Upload onDone={(d) => { setNotice({ text: `Uploaded ${d.name}: ${d.n_samples} samples, ${d.n_features} features, ${d.n_classes} classes.` }); setRefresh((r) => r + 1); }} />
      {notice && <p class={notice.error ? "error" : "ok"} role={notice.error ? "alert" : "status"} id="datasets-notice">{notice.text}</p>}
      <ErrorBox error={error} />
      <Section title="All datasets">
        <table id="datasets-table">
          <thead><tr><th>Name</th><th>Id</th><th>Format</th><th>Samples</th><th>Features</th><th>Classes</th><th>Visible units</th><th>Size</th><th>Added</th><th /></tr></thead>
          <tbody>
            {(items ?? []).map((d) => (
              <tr key={d.id} data-dataset-id={d.id}>
                <td>{d.name}<CheckOutcome d={d} /></td>
                <td class="mono small">{d.id}</td>
                <td>{d.format}{datasetReady(d) ? null : <span class={`muted small status-${d.status}`}> ({d.status})</span>}</td>
                <td class="num">{fmtNum(d.n_samples)}</td>
                <td class="num">{fmtNum(d.n_features)}</td>
                <td class="num" title={Object.entries(d.class_counts ?? {}).map(([k, v]) => `${k}: ${v}`).join("\n")}>{d.n_classes}</td>
                <td>{d.visible_units_hint}</td>
                <td class="num">{d.builtin ? "" : fmtBytes(d.size_bytes)}</td>
                <td class="muted small">{d.builtin ? "built in" : fmtAgo(d.created_at)}</td>
                <td class="actions">
                  {datasetReady(d) && (
                    <button class="small" onClick={() => navigate(`#/submit?dataset=${encodeURIComponent(d.id)}`)}>Train on it</button>
                  )}
                  {!d.builtin && (
                    <button class={`small ${confirming === d.id ? "danger" : ""}`} onClick={() => remove(d)}>
                      {confirming === d.id ? "Really delete?" : "Delete"}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </div>
  );
}

/** Under the name of a dataset that is not ready: why its check failed, or that it runs. */
function CheckOutcome({ d }: { d: Dataset }) {
  if (datasetReady(d)) return null;
  const text = d.status === "validating" ? "The server is checking the file…" : `Check failed: ${d.status_reason ?? "no reason given"}`;
  return <div class={`small check-outcome check-${d.status}`}>{text}</div>;
}

function Upload({ onDone }: { onDone: (d: Dataset) => void }) {
  const [progress, setProgress] = useState<{ loaded: number; total: number } | null>(null);
  const [checking, setChecking] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [isIdx, setIsIdx] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    const data = new FormData(form);
    const file = data.get("file");
    if (!(file instanceof File) || !file.name) {
      setError(new Error("Choose a file first."));
      return;
    }
    for (const k of ["name", "label_column", "side_info_column"]) if (!String(data.get(k) ?? "").trim()) data.delete(k);
    const labels = data.get("labels_file");
    if (!(labels instanceof File) || !labels.name) data.delete("labels_file");
    setError(null);
    setProgress({ loaded: 0, total: file.size });
    try {
      const uploaded = await uploadDataset(data, (loaded, total) => setProgress({ loaded, total: total || file.size }));
      setProgress(null);
      setChecking(true);
      const d = await waitDataset(uploaded);
      form.reset();
      setIsIdx(false);
      onDone(d);
    } catch (err) {
      setError(err);
    } finally {
      setProgress(null);
      setChecking(false);
    }
  }

  const pct = progress && progress.total ? Math.round((100 * progress.loaded) / progress.total) : 0;
  return (
    <Section title="Upload">
      <form class="upload" onSubmit={submit} noValidate>
        <label>File <input type="file" name="file" accept=".csv,.npz,.gz,.idx" required
          onChange={(e) => setIsIdx(/\.(gz|idx[0-9-]*.*)$/i.test((e.target as HTMLInputElement).files?.[0]?.name ?? ""))} /></label>
        {isIdx && <label>IDX labels file <input type="file" name="labels_file" /></label>}
        <label>Name <input name="name" placeholder="(the file name)" /></label>
        <label>Label column <input name="label_column" placeholder="label" size={10} /></label>
        <label>Side-information column <input name="side_info_column" placeholder="(labels)" size={10} /></label>
        <button class="primary" disabled={!!progress || checking}>Upload</button>
      </form>
      <p class="muted small">CSV with a header row, NPZ with arrays X, y (and optional groups), or gzipped IDX images with their labels file.</p>
      {progress && (
        <div class="upload-progress">
          <progress id="upload-progress" max={100} value={pct} /> {pct}% · {fmtBytes(progress.loaded)} of {fmtBytes(progress.total)}
        </div>
      )}
      {checking && <p class="muted" id="upload-checking" role="status">Uploaded; the server is checking the file…</p>}
      <ErrorBox error={error} />
    </Section>
  );
}

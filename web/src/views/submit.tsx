// Submit a job (or a sweep) from a form, pre-filled from the server's defaults or from an
// earlier job; the server's problem+json field errors are shown beside the fields. Defaults,
// choices and help text come from the JobSpec schema in /openapi.json (src/schema.ts).
import type { JSX } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, call, getJob, listDatasets, submitJob, submitSweep } from "../api";
import { getPath, setPath } from "../format";
import { navigate } from "../route";
import { choices, describe, type JobSchema, loadJobSchema, sectionDefaults, specDefaults } from "../schema";
import { type Dataset, datasetReady, type Spec } from "../types";

const clone = <T,>(v: T): T => JSON.parse(JSON.stringify(v));

/** A number field's text becomes a number when it is one; anything else goes as typed, so the
 * server's validation names the field. Empty is null. */
function toValue(text: string): unknown {
  const t = text.trim();
  if (t === "") return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

function toList(text: string): unknown {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (parts.every((p) => /^-?\d+$/.test(p))) return parts.map(Number);
  return text;
}

/** Why the form may not train on dataset `id`, or "" when it may (or the list is unknown). */
function unusableDataset(id: string, datasets: Dataset[] | null): string {
  if (!id || datasets === null) return "";
  const d = datasets.find((x) => x.id === id);
  if (!d) return `There is no dataset ${id} (deleted, or never uploaded); choose one.`;
  if (datasetReady(d)) return "";
  if (d.status === "validating") return `Dataset ${d.name} (${id}) is still being checked; choose a ready one, or reopen this form once it is ready.`;
  return `Dataset ${d.name} (${id}) failed its check and cannot be trained on: ${d.status_reason ?? "no reason given"}. Choose a ready one.`;
}

const textOf = (v: unknown) => (v === null || v === undefined ? "" : Array.isArray(v) ? v.join(", ") : String(v));

interface FieldErrors {
  byField: Record<string, string[]>;
  general: string[];
}

export function SubmitPage({ from }: { from: string | null }) {
  const query = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const [spec, setSpec] = useState<Spec | null>(null);
  const [stash, setStash] = useState<Record<string, any>>({});
  const [help, setHelp] = useState<Record<string, string>>({});
  /** null while unknown (not loaded, or the list failed). */
  const [datasets, setDatasets] = useState<Dataset[] | null>(null);
  const [datasetNote, setDatasetNote] = useState("");
  const [errors, setErrors] = useState<FieldErrors>({ byField: {}, general: [] });
  const [busy, setBusy] = useState(false);
  const [asSweep, setAsSweep] = useState(query.get("sweep") === "1");
  const [grid, setGrid] = useState('{\n  "pretrain.dr.weight": [0, 0.5, 1],\n  "seed": [0, 1]\n}');
  const [source, setSource] = useState("");
  const [schema, setSchema] = useState<JobSchema | null>(null);
  const [schemaError, setSchemaError] = useState("");

  useEffect(() => {
    (async () => {
      const listed = listDatasets().catch(() => null);
      let js: JobSchema;
      try {
        js = await loadJobSchema();
      } catch (err) {
        setSchemaError(err instanceof Error ? err.message : String(err));
        return;
      }
      setSchema(js);
      setHelp(describe(js));
      let base: Spec = specDefaults(js);
      if (from) {
        try {
          const job = await getJob(from);
          base = clone(job.spec);
          if (job.name) base.name = job.name;
          if (job.tags?.length) base.tags = job.tags;
          setSource(job.name || job.id);
        } catch (err) {
          setErrors({ byField: {}, general: [`Could not load job ${from}: ${err instanceof Error ? err.message : String(err)}`] });
        }
      }
      const ds = query.get("dataset");
      if (ds) base.dataset_id = ds;
      const all = await listed;
      const unusable = unusableDataset(base.dataset_id, all);
      if (unusable) base.dataset_id = "";
      setDatasetNote(unusable);
      setDatasets(all);
      setSpec(base);
    })();
  }, [from]);

  const paths = useMemo(() => new Set<string>(), []);
  const numeric = useMemo(() => new Set<string>(), []);
  if (schemaError) return <p class="error" role="alert" id="schema-error">The form needs the job schema: {schemaError}</p>;
  if (!spec || !schema) return <p class="muted">Loading the form…</p>;

  const update = (path: string, value: unknown) => {
    const next = clone(spec);
    setPath(next, path, value);
    setSpec(next);
    if (errors.byField[path]) {
      const byField = { ...errors.byField };
      delete byField[path];
      setErrors({ ...errors, byField });
    }
  };
  const toggleSection = (path: string, on: boolean) => {
    const next = clone(spec);
    if (on) setPath(next, path, stash[path] ?? sectionDefaults(schema, path));
    else {
      setStash({ ...stash, [path]: getPath(spec, path) });
      setPath(next, path, null);
    }
    setSpec(next);
  };

  const errorFor = (path: string) => {
    const msgs = errors.byField[path];
    return msgs ? <span class="field-error" role="alert" data-field={path}>{msgs.join("; ")}</span> : null;
  };
  const wrap = (path: string, label: string, input: JSX.Element) => {
    paths.add(path);
    return (
      <label class={`field${errors.byField[path] ? " invalid" : ""}`} title={help[path] ?? ""}>
        <span class="field-label">{label}</span>
        {input}
        {errorFor(path)}
      </label>
    );
  };
  // Number fields keep the text as typed; body() turns it into a number.
  const num = (path: string, label: string, step = "any") => {
    numeric.add(path);
    return wrap(path, label,
      <input name={path} type="text" inputMode="decimal" data-step={step} value={textOf(getPath(spec, path))}
        aria-invalid={errors.byField[path] ? "true" : undefined}
        onInput={(e) => update(path, (e.target as HTMLInputElement).value)} />);
  };
  const text = (path: string, label: string, placeholder = "") => wrap(path, label,
    <input name={path} value={textOf(getPath(spec, path))} placeholder={placeholder}
      aria-invalid={errors.byField[path] ? "true" : undefined}
      onInput={(e) => update(path, (e.target as HTMLInputElement).value)} />);
  // The choices are the field's enum in the schema (a Literal in drtrain/jobs/spec.py).
  const select = (path: string, label: string) => wrap(path, label,
    <select name={path} value={textOf(getPath(spec, path))} onChange={(e) => update(path, (e.target as HTMLSelectElement).value)}>
      {choices(schema, path).map((o) => <option value={o}>{o}</option>)}
    </select>);
  const check = (path: string, label: string) => wrap(path, label,
    <input name={path} type="checkbox" checked={Boolean(getPath(spec, path))} onChange={(e) => update(path, (e.target as HTMLInputElement).checked)} />);
  const pairs = (path: string) => {
    const v = getPath(spec, path);
    const sampled = v && typeof v === "object";
    return (
      <>
        {wrap(path, "Pairs", (
          <select name={path} value={sampled ? "sample" : "all"}
            onChange={(e) => update(path, (e.target as HTMLSelectElement).value === "all" ? "all" : { sample: 8 })}>
            <option value="all">all pairs</option>
            <option value="sample">K sampled</option>
          </select>
        ))}
        {sampled && num(`${path}.sample`, "K partners", "1")}
      </>
    );
  };
  const section = (path: string, title: string, body: () => JSX.Element) => {
    const on = getPath(spec, path) !== null && getPath(spec, path) !== undefined;
    return (
      <fieldset class={on ? "" : "off"}>
        <legend>
          <label><input type="checkbox" name={`${path}.enabled`} checked={on} onChange={(e) => toggleSection(path, (e.target as HTMLInputElement).checked)} /> {title}</label>
        </legend>
        {errorFor(path)}
        {on ? body() : <p class="muted small">Off ({path}: null).</p>}
      </fieldset>
    );
  };

  function assign(problem: ApiError): void {
    const byField: Record<string, string[]> = {};
    const general: string[] = [];
    for (const e of problem.problem.errors ?? []) {
      let loc = (e.loc ?? []).map(String);
      if (loc[0] === "body") loc = loc.slice(1);
      if (asSweep && loc[0] === "base") loc = loc.slice(1);
      if (asSweep && loc[0] === "grid") {
        (byField.grid ??= []).push(`${loc.slice(1).join(".")}: ${e.msg}`.replace(/^: /, ""));
        continue;
      }
      let matched = "";
      for (let n = loc.length; n > 0 && !matched; n--) {
        const p = loc.slice(0, n).join(".");
        if (paths.has(p) || p === "pretrain" || p === "finetune" || p === "pretrain.dr" || p === "finetune.dr") matched = p;
      }
      if (matched) (byField[matched] ??= []).push(e.msg);
      else general.push(`${loc.join(".") || "spec"}: ${e.msg}`);
    }
    if (!problem.problem.errors?.length) general.push(problem.problem.detail || problem.problem.title);
    setErrors({ byField, general });
  }

  function body(): Spec {
    const out: Spec = clone(spec as Spec);
    for (const path of numeric) {
      const v = getPath(out, path);
      if (typeof v === "string") setPath(out, path, toValue(v));
    }
    // Optional fields travel only when set (a server without names and tags refuses them).
    if (!out.name) delete out.name;
    if (typeof out.tags === "string") out.tags = out.tags.split(",").map((t: string) => t.trim()).filter(Boolean);
    if (!out.tags?.length) delete out.tags;
    if (typeof out.model?.hidden_layers === "string") out.model.hidden_layers = toList(out.model.hidden_layers);
    const layers = out.finetune?.dr?.layers;
    if (typeof layers === "string" && layers.trim() !== "all") out.finetune.dr.layers = toList(layers);
    return out;
  }

  async function submit(e: Event) {
    e.preventDefault();
    if (spec && !spec.dataset_id) {
      // said here rather than as the server's "at least 1 character" on an empty field
      setDatasetNote("Choose a ready dataset to train on (upload one on the Datasets page).");
      return;
    }
    setBusy(true);
    setErrors({ byField: {}, general: [] });
    try {
      if (asSweep) {
        let g: unknown;
        try {
          g = JSON.parse(grid);
        } catch (err) {
          setErrors({ byField: { grid: [`not JSON: ${(err as Error).message}`] }, general: [] });
          return;
        }
        const sweep = await submitSweep({ base: body(), grid: g });
        navigate(`#/sweeps/${sweep.id}`);
      } else {
        const job = await submitJob(body());
        navigate(`#/jobs/${job.id}`);
      }
    } catch (err) {
      if (err instanceof ApiError) assign(err);
      else setErrors({ byField: {}, general: [String(err)] });
    } finally {
      setBusy(false);
    }
  }

  const nErrors = Object.values(errors.byField).reduce((n, m) => n + m.length, 0) + errors.general.length;
  const usable = (datasets ?? []).filter(datasetReady);
  // The spec's own dataset stays a choice only while the list is unknown; none chosen, a prompt.
  const unlisted = usable.some((d) => d.id === spec.dataset_id) ? null
    : <option value={spec.dataset_id} disabled={!spec.dataset_id}>{spec.dataset_id || "Choose a ready dataset"}</option>;

  return (
    <form class="submit-form" onSubmit={submit} noValidate id="submit-form">
      <div class="page-head">
        <h1>{asSweep ? "New sweep" : "New job"}</h1>
        {source && <span class="muted">based on {source}</span>}
      </div>
      {nErrors > 0 && (
        <div class="error problems" role="alert" id="submit-errors">
          <strong>The server refused this {asSweep ? "sweep" : "spec"}</strong>
          {Object.keys(errors.byField).length > 0 && <> — see the marked fields.</>}
          {errors.general.map((g) => <p>{g}</p>)}
        </div>
      )}
      <fieldset>
        <legend>Job</legend>
        {text("name", "Name", "optional")}
        {wrap("tags", "Tags", <input name="tags" value={textOf(spec.tags)} placeholder="comma, separated"
          onInput={(e) => update("tags", (e.target as HTMLInputElement).value)} />)}
        {wrap("dataset_id", "Dataset", (
          <>
            <select name="dataset_id" class="wide-input" value={spec.dataset_id}
              onChange={(e) => { setDatasetNote(""); update("dataset_id", (e.target as HTMLSelectElement).value); }}>
              {unlisted}
              {usable.map((d) => <option value={d.id}>{d.name === d.id ? d.id : `${d.name} (${d.id})`}</option>)}
            </select>
            {datasetNote && <span class="field-note" role="alert" id="dataset-note">{datasetNote}</span>}
          </>
        ))}
        {wrap("test_dataset_id", "Test dataset", (
          <select name="test_dataset_id" class="wide-input" value={spec.test_dataset_id ?? ""}
            onChange={(e) => update("test_dataset_id", (e.target as HTMLSelectElement).value || null)}>
            <option value="">none (or the built-in's own test set)</option>
            {usable.filter((d) => d.id !== spec.dataset_id).map((d) => <option value={d.id}>{d.name === d.id ? d.id : `${d.name} (${d.id})`}</option>)}
          </select>
        ))}
        {num("validation_fraction", "Validation fraction")}
        {num("seed", "Seed", "1")}
        {text("device", "Device", "auto")}
        {select("precision", "Precision")}
        {num("max_runtime_seconds", "Max runtime (s)", "1")}
        {num("max_attempts", "Max attempts", "1")}
      </fieldset>
      <fieldset>
        <legend>Model</legend>
        {wrap("model.hidden_layers", "Hidden layers", <input name="model.hidden_layers" value={textOf(spec.model?.hidden_layers)}
          placeholder="500, 500" aria-invalid={errors.byField["model.hidden_layers"] ? "true" : undefined}
          onInput={(e) => update("model.hidden_layers", (e.target as HTMLInputElement).value)} />)}
        {select("model.visible_units", "Visible units")}
      </fieldset>
      {section("pretrain", "Pretraining (greedy DBN of RBMs)", () => (
        <>
          <div class="row">
            {num("pretrain.epochs", "Epochs per layer", "1")}
            {num("pretrain.batch_size", "Batch size", "1")}
            {num("pretrain.learning_rate", "Learning rate")}
            {num("pretrain.cd_k", "CD-k", "1")}
            {check("pretrain.persistent", "Persistent CD")}
            {num("pretrain.momentum", "Momentum")}
            {num("pretrain.final_momentum", "Final momentum")}
            {num("pretrain.weight_decay", "Weight decay")}
            {num("pretrain.side_rows_per_batch", "Side rows per batch (empty: off)", "1")}
          </div>
          {section("pretrain.dr", "Diversifying regularization (generative)", () => (
            <div class="row">
              {num("pretrain.dr.weight", "Weight λ")}
              {select("pretrain.dr.divergence", "Divergence")}
              {pairs("pretrain.dr.pairs")}
              {select("pretrain.dr.normalize", "Normalize")}
            </div>
          ))}
        </>
      ))}
      {section("finetune", "Fine-tuning (supervised MLP)", () => (
        <>
          <div class="row">
            {num("finetune.epochs", "Epochs", "1")}
            {num("finetune.batch_size", "Batch size", "1")}
            {select("finetune.optimizer", "Optimizer")}
            {num("finetune.learning_rate", "Learning rate")}
            {num("finetune.momentum", "Momentum")}
            {num("finetune.weight_decay", "Weight decay")}
            {select("finetune.activation", "Activation")}
            {select("finetune.init", "Initialisation")}
            {num("finetune.init_std", "Init std (normal)")}
          </div>
          {section("finetune.dr", "Diversifying regularization (discriminative)", () => (
            <div class="row">
              {num("finetune.dr.weight", "Weight λ")}
              {select("finetune.dr.distance", "Distance")}
              {text("finetune.dr.layers", "Layers", "all or 0, 1")}
              {pairs("finetune.dr.pairs")}
              {select("finetune.dr.normalize", "Normalize")}
            </div>
          ))}
        </>
      ))}
      <fieldset>
        <legend><label><input type="checkbox" checked={asSweep} onChange={(e) => setAsSweep((e.target as HTMLInputElement).checked)} id="as-sweep" /> Run as a sweep</label></legend>
        {asSweep ? (
          <label class={`field wide${errors.byField.grid ? " invalid" : ""}`}>
            <span class="field-label">Grid: dotted spec paths and the values each takes (one job per combination)</span>
            <textarea name="grid" rows={5} value={grid} onInput={(e) => setGrid((e.target as HTMLTextAreaElement).value)} />
            {errorFor("grid")}
          </label>
        ) : <p class="muted small">One job per point of a grid, e.g. DR weight × seed.</p>}
      </fieldset>
      <details class="card">
        <summary>Spec as JSON</summary>
        <pre class="spec">{JSON.stringify(body(), null, 2)}</pre>
      </details>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy} id="submit-button">{busy ? "Submitting…" : asSweep ? "Start sweep" : "Submit job"}</button>
        <a href="#/jobs" class="button">Cancel</a>
      </div>
    </form>
  );
}

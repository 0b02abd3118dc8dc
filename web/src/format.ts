// Small pure helpers: time, numbers, a job's short descriptions, spec paths.
import type { FinalMetric } from "./names";
import type { Job, Spec } from "./types";

/** Server datetimes are ISO 8601; one without a zone is UTC. */
export function parseTime(s: string | null | undefined): number | null {
  if (!s) return null;
  const zoned = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`;
  const t = Date.parse(zoned);
  return Number.isNaN(t) ? null : t;
}

export function fmtDuration(ms: number | null): string {
  if (ms === null || ms < 0) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function jobDuration(job: Job, now = Date.now()): number | null {
  const start = parseTime(job.started_at);
  if (start === null) return null;
  return (parseTime(job.finished_at) ?? now) - start;
}

export function fmtAgo(s: string | null | undefined, now = Date.now()): string {
  const t = parseTime(s);
  if (t === null) return "";
  const d = Math.max(0, now - t);
  if (d < 60_000) return `${Math.round(d / 1000)}s ago`;
  if (d < 3_600_000) return `${Math.round(d / 60_000)}m ago`;
  if (d < 86_400_000) return `${Math.round(d / 3_600_000)}h ago`;
  return new Date(t).toLocaleDateString();
}

export function fmtTime(s: string | null | undefined): string {
  const t = parseTime(s);
  return t === null ? "" : new Date(t).toLocaleString();
}

export function fmtNum(v: unknown, digits = 4): string {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e7) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}

export function fmtPct(v: unknown): string {
  return typeof v === "number" && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : "";
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export const shortId = (id: string) => (id.length > 10 ? id.slice(0, 8) : id);

export function jobTitle(job: Pick<Job, "id" | "name">): string {
  return job.name || shortId(job.id);
}

/** The final accuracy a person looks for first: validation, else test, else train. */
export function finalAccuracy(job: Job): number | null {
  const r = job.result ?? {};
  const preferred: FinalMetric[] = ["val_accuracy", "test_accuracy", "train_accuracy"];
  for (const k of preferred) {
    if (typeof r[k] === "number") return r[k];
  }
  return null;
}

/** DR settings in a few words, e.g. "pre hellinger λ1 · ft euclidean λ0.1". */
/**
 * A spec's DR settings in brief. ``swept``: the paths a sweep's grid varies (a sweep's base);
 * what they cover reads "swept" rather than the base's value, which no job of it ran with.
 */
export function drShort(spec: Spec, swept: readonly string[] = []): string {
  const varies = (path: string) => swept.some((p) => path === p || path.startsWith(`${p}.`));
  const part = (tag: string, section: string, kindKey: string, kindDefault: string): string | null => {
    // a grid path through a null section switches the section on (docs/api.md)
    if (!spec[section] && !swept.some((p) => p === section || p.startsWith(`${section}.`))) return null;
    if (varies(`${section}.dr`)) return `${tag} DR swept`;
    const dr = spec[section]?.dr;
    const kind = varies(`${section}.dr.${kindKey}`) ? `${kindKey} swept` : dr?.[kindKey] ?? kindDefault;
    if (varies(`${section}.dr.weight`)) return `${tag} ${kind} λ swept`;
    return dr && dr.weight > 0 ? `${tag} ${kind} λ${fmtNum(dr.weight)}` : `${tag} off`;
  };
  const parts = [part("pre", "pretrain", "divergence", "hellinger"), part("ft", "finetune", "distance", "euclidean")];
  return parts.filter((p) => p !== null).join(" · ") || "—";
}

export function architecture(spec: Spec): string {
  const h = spec.model?.hidden_layers;
  return Array.isArray(h) ? h.join("-") : "";
}

/** Leaves of a JSON object as dotted paths (arrays are leaves). */
export function flatten(obj: unknown, prefix = "", out: Record<string, unknown> = {}): Record<string, unknown> {
  if (obj && typeof obj === "object" && !Array.isArray(obj)) {
    const entries = Object.entries(obj as Record<string, unknown>);
    if (!entries.length && prefix) out[prefix] = obj;
    for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out[prefix] = obj;
  }
  return out;
}

export function getPath(obj: any, path: string): any {
  let node = obj;
  for (const part of path.split(".")) {
    if (node === null || node === undefined) return undefined;
    node = node[part];
  }
  return node;
}

export function setPath(obj: any, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = obj;
  for (const part of parts.slice(0, -1)) {
    if (node[part] === null || typeof node[part] !== "object") node[part] = {};
    node = node[part];
  }
  node[parts[parts.length - 1]] = value;
}

export function show(v: unknown): string {
  if (v === undefined) return "—";
  if (typeof v === "number") return fmtNum(v);
  return JSON.stringify(v);
}

/** Does a bigger value of this metric mean better? (accuracies and likelihoods yes, losses no). */
export function higherIsBetter(name: string): boolean {
  return /accuracy|likelihood|divergence/.test(name);
}

/**
 * The spec paths whose values differ among these specs, sorted. A section that is null in one
 * spec (DR off) is one path, holding each whole section, rather than one per field inside it.
 */
export function differingPaths(specs: Spec[]): string[] {
  const flat = specs.map((s) => flatten(s));
  const paths = new Set(flat.flatMap((f) => Object.keys(f)));
  const rows = [...paths].sort().filter((p) => new Set(flat.map((f) => JSON.stringify(f[p]))).size > 1);
  const nulled = rows.filter((r) => flat.some((f) => f[r] === null) && rows.some((c) => c.startsWith(`${r}.`)));
  return rows.filter((r) => !nulled.some((n) => r.startsWith(`${n}.`)));
}

const shortPath = (path: string) => path.replace(/^pretrain\./, "pre.").replace(/^finetune\./, "ft.");
const shortValue = (v: unknown) => (v === null ? "off" : v && typeof v === "object" && !Array.isArray(v) ? "on" : show(v));

/** A spec field's value as people read it: a dataset by its name (``datasets``: id to name)
 * when known, else its short id. */
export function fieldValue(path: string, v: unknown, datasets: Record<string, string> = {}): string {
  if (path === "dataset_id" && typeof v === "string") return datasets[v] ?? (v.includes(":") ? v : shortId(v));
  return shortValue(v);
}

/** What sets each job apart from the others: "ft.dr.weight=0.1, seed=1" (at most `limit` fields). */
export function distinguishing(jobs: Pick<Job, "spec">[], limit = 3,
                               datasets: Record<string, string> = {}): (job: Pick<Job, "spec">) => string {
  const paths = jobs.length > 1 ? differingPaths(jobs.map((j) => j.spec)).slice(0, limit) : [];
  return (job) => paths.map((p) => `${shortPath(p)}=${fieldValue(p, getPath(job.spec, p), datasets)}`).join(", ");
}

/** A run named so it can be told apart: its name, its distinguishing fields, its short id. */
export function runLabel(job: Pick<Job, "id" | "name" | "spec">, fields: string): string {
  return [job.name, fields, shortId(job.id)].filter(Boolean).join(" · ");
}

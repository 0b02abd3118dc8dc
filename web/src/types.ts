// Shapes of the v1 API as the app reads them (see api/schemas and drtrain/*/schemas).
// Fields added later by the server (name, tags, warnings) are optional here.
import { TERMINAL_STATUSES, type DatasetStatus, type JobStatus, type Phase } from "./names";

export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail: string;
  errors?: { loc: (string | number)[]; msg: string; type?: string }[] | null;
}

export type Spec = Record<string, any>;

export interface Job {
  id: string;
  name?: string | null;
  tags?: string[] | null;
  warnings?: string[] | null;
  status: JobStatus;
  status_reason: string | null;
  phase: Phase | null;
  layer: number | null;
  epoch: number | null;
  progress: number;
  attempt: number;
  max_attempts: number;
  cancel_requested?: boolean;
  spec: Spec;
  dataset_id: string;
  sweep_id: string | null;
  /** The job's values of its sweep's grid (null outside a sweep). */
  grid_point?: Record<string, unknown> | null;
  created_at: string;
  /** When the job took one of its tenant's running slots; null while it waits in the queue. */
  dispatched_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  heartbeat_at: string | null;
  result: Record<string, any> | null;
}

/** GET /v1/queue: the tenant's running slots and the jobs waiting for one, next first. */
export interface QueueState {
  running_limit: number;
  queued_limit: number;
  dispatched: number;
  waiting: number;
  items: { position: number; job_id: string }[];
  /** The place of the job asked for with `job_id`; null when it is not waiting. */
  position: number | null;
}

/** A queued job still waiting for one of its tenant's running slots. */
export const waitingForSlot = (j: Job) => j.status === "queued" && j.dispatched_at === null;

export interface MetricPoint {
  seq: number;
  phase: Phase;
  layer: number | null;
  epoch: number;
  name: string;
  value: number;
  at: string;
}

export interface Checkpoint {
  id: string;
  kind: string;
  phase: string | null;
  layer: number | null;
  epoch: number | null;
  attempt: number;
  sha256: string;
  size_bytes: number;
  created_at: string;
}

/** GET /v1/settings: how often a running job stores a resumable checkpoint. */
export interface ServerSettings {
  checkpoint_every_epochs: number;
  checkpoint_every_seconds: number;
}

export interface Dataset {
  id: string;
  name: string;
  format: string;
  n_samples: number;
  n_features: number;
  n_classes: number;
  class_counts: Record<string, number>;
  feature_range: number[];
  visible_units_hint: string;
  sha256: string;
  size_bytes: number;
  created_at: string;
  label_column?: string | null;
  side_info_column?: string | null;
  builtin?: boolean;
  /** "validating" until the server's check of an upload ends, then "ready" or "failed". */
  status?: DatasetStatus;
  status_reason?: string | null;
}

/** A dataset jobs can train on: its check passed (a server without checks sends no status). */
export const datasetReady = (d: Dataset) => (d.status ?? "ready") === "ready";

export interface SweepChild {
  job_id: string;
  grid_point: Record<string, any>;
  status: JobStatus;
  result: Record<string, any> | null;
}

export interface SummaryRow {
  point: Record<string, any>;
  n: number;
  n_done: number;
  /** n: the runs behind the figure (absent from servers before it was added). */
  metrics: Record<string, { mean: number; std: number; n?: number }>;
}

export interface Sweep {
  id: string;
  base: Spec;
  grid: Record<string, any[]>;
  created_at: string;
  children: SweepChild[];
  summary: SummaryRow[];
}

export const TERMINAL = new Set<string>(TERMINAL_STATUSES);

// The names the app shares with the server, each list copied once here from its one source in
// Python; tests/test_lists.py fails when a list below differs from its source:
//   job statuses            drtrain/kit/models.py (JobStatus, TERMINAL_STATUSES)
//   dataset statuses        drtrain/kit/models.py (DatasetStatus)
//   phases, metric names    dr_core/events.py (Phase, *_METRICS, GRAD_NORM, GRAD_NORM_DR)
// Other files name these through the types below, so tsc checks every use. The submit form's
// choices and defaults are not here: it reads them from /openapi.json (src/schema.ts).

export const JOB_STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

// An upload is "validating" until the server's check of it ends: "ready" (jobs may train on it)
// or "failed" (its status_reason says why).
export const DATASET_STATUSES = ["validating", "ready", "failed"] as const;
export type DatasetStatus = (typeof DATASET_STATUSES)[number];

export const PHASES = ["pretrain", "finetune"] as const;
export type Phase = (typeof PHASES)[number];

export const PRETRAIN_METRICS = ["recon_error", "free_energy_gap", "pseudo_log_likelihood", "dr",
  "dr_pairs_per_batch", "cross_group_divergence"] as const;
export type PretrainMetric = (typeof PRETRAIN_METRICS)[number];

export const FINETUNE_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "dr"] as const;
export type FinetuneMetric = (typeof FINETUNE_METRICS)[number];

export const FINAL_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
  "test_accuracy", "epochs_pretrain", "epochs_finetune", "wall_seconds"] as const;
export type FinalMetric = (typeof FINAL_METRICS)[number];

// Per-layer gradient norms in fine-tuning: the prefix, then "layer{i}" or "head".
export const GRAD_NORM = "grad_norm.";
export const GRAD_NORM_DR = "grad_norm_dr.";

// The worker's own figures, recorded beside each epoch's metrics.
export const SYSTEM_METRICS = ["sys.cpu_percent", "sys.rss_bytes", "sys.gpu_utilization_percent",
  "sys.gpu_memory_allocated_bytes", "sys.gpu_memory_peak_bytes"] as const;
export type SystemMetric = (typeof SYSTEM_METRICS)[number];

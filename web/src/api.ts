// The JSON API, as the app uses it: every call carries the key, every error arrives as
// RFC 9457 problem+json and becomes an ApiError.
import type { Checkpoint, Dataset, Job, MetricPoint, Problem, QueueState, ServerSettings, Sweep } from "./types";

const KEY = "drtrain-key";

/** The key lives in this tab (sessionStorage) or, when the person chose "remember this key on
 * this device", in localStorage too, so a shared link opened in a new tab needs no sign-in. */
export function getKey(): string {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? "";
}
export function setKey(key: string, remember = false): void {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}
export function clearKey(): void {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(public status: number, public problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
  }
}

// Whoever shows the sign-in page listens: a 401 anywhere means the key is no good (any more).
type Listener = (message: string) => void;
let onUnauthorized: Listener = () => {};
export function setUnauthorizedHandler(fn: Listener): void {
  onUnauthorized = fn;
}

function authHeaders(key = getKey()): Record<string, string> {
  return { Authorization: `Bearer ${key}` };
}

export async function problemOf(resp: Response): Promise<ApiError> {
  let problem: Problem = { title: resp.statusText, status: resp.status, detail: "" };
  try {
    const type = resp.headers.get("content-type") ?? "";
    if (type.includes("json")) problem = { ...problem, ...(await resp.json()) };
    else problem.detail = (await resp.text()).slice(0, 500);
  } catch {
    /* keep the status line */
  }
  return new ApiError(resp.status, problem);
}

export function unauthorizedMessage(err: ApiError): string {
  return `The server did not accept this API key (401: ${err.problem.detail || err.problem.title}). ` +
    "Use the key that 'drtrain up' printed (also in <data-dir>/api-key), or make one with " +
    "'drtrain keys create --tenant NAME'.";
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  key?: string;
}

export async function call<T>(path: string, opts: CallOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders(opts.key), ...opts.headers };
  let body: BodyInit | undefined;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  const resp = await fetch(path, { method: opts.method ?? "GET", headers, body, signal: opts.signal });
  if (!resp.ok) {
    const err = await problemOf(resp);
    if (resp.status === 401 && opts.key === undefined) onUnauthorized(unauthorizedMessage(err));
    throw err;
  }
  if (resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

/** Items of a list answer: `{items}` (the v1 envelope), or the older `{jobs}`/`{points}` or a bare array. */
export function itemsOf<T>(body: unknown): T[] {
  if (Array.isArray(body)) return body as T[];
  const b = body as Record<string, unknown> | null;
  for (const k of ["items", "jobs", "points", "checkpoints"]) {
    if (b && Array.isArray(b[k])) return b[k] as T[];
  }
  return [];
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export async function listJobs(params: { status?: string; tag?: string; pageSize?: number; pageToken?: string | null } = {}): Promise<Page<Job>> {
  // The list shows each job's DR settings in short, which live in its spec (left out of list
  // rows unless asked for).
  const q = new URLSearchParams({ page_size: String(params.pageSize ?? 100), include: "spec" });
  if (params.status) q.set("status", params.status);
  if (params.tag) q.set("tag", params.tag);
  if (params.pageToken) q.set("page_token", params.pageToken);
  const body = await call<{ next_page_token?: string | null }>(`/v1/jobs?${q}`);
  return { items: itemsOf<Job>(body), next: body.next_page_token ?? null };
}

export const getJob = (id: string) => call<Job>(`/v1/jobs/${encodeURIComponent(id)}`);
export const cancelJob = (id: string) => call<Job>(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
export const submitJob = (spec: unknown) => call<Job>("/v1/jobs", { method: "POST", body: spec });
export const submitSweep = (body: unknown) => call<Sweep>("/v1/sweeps", { method: "POST", body });
export const getSweep = (id: string) => call<Sweep>(`/v1/sweeps/${encodeURIComponent(id)}`);
export const deleteSweep = (id: string) => call<void>(`/v1/sweeps/${encodeURIComponent(id)}`, { method: "DELETE" });
export const cancelSweep = (id: string) => call<Sweep>(`/v1/sweeps/${encodeURIComponent(id)}/cancel`, { method: "POST" });
export const listDatasets = async () => itemsOf<Dataset>(await call("/v1/datasets"));
export const deleteDataset = (id: string) => call<void>(`/v1/datasets/${encodeURIComponent(id)}`, { method: "DELETE" });
export const deleteJob = (id: string) => call<void>(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
export const listCheckpoints = async (id: string) =>
  itemsOf<Checkpoint>(await call(`/v1/jobs/${encodeURIComponent(id)}/checkpoints`));
export const getSettings = () => call<ServerSettings>("/v1/settings");
/** The tenant's queue: its `limit` next waiting jobs, and with `jobId` that job's place. */
export function getQueue(params: { limit?: number; jobId?: string; signal?: AbortSignal } = {}): Promise<QueueState> {
  const q = new URLSearchParams({ limit: String(params.limit ?? 0) });
  if (params.jobId) q.set("job_id", params.jobId);
  return call<QueueState>(`/v1/queue?${q}`, { signal: params.signal });
}

/** Every metric point after `since`, following `next_since` until the server has no more. */
export async function metricsSince(id: string, since = 0, signal?: AbortSignal): Promise<{ points: MetricPoint[]; next: number }> {
  const points: MetricPoint[] = [];
  for (let guard = 0; guard < 100; guard++) {
    const body = await call<{ next_since?: number }>(
      `/v1/jobs/${encodeURIComponent(id)}/metrics?since=${since}&limit=5000`, { signal });
    const page = itemsOf<MetricPoint>(body);
    points.push(...page);
    const next = body.next_since ?? (page.length ? page[page.length - 1].seq : since);
    if (!page.length || next <= since || page.length < 5000) return { points, next };
    since = next;
  }
  return { points, next: since };
}

export interface StreamHandlers {
  metric(point: MetricPoint): void;
  status(job: Job): void;
}

/**
 * Reads `GET /v1/jobs/{id}/events` with fetch (EventSource cannot send an Authorization header)
 * and parses Server-Sent Events by hand. Resolves when the server ends the stream (after a
 * terminal status); rejects on a network error or abort. `lastId` resumes after that seq.
 */
export async function streamEvents(id: string, lastId: number, on: StreamHandlers, signal: AbortSignal): Promise<void> {
  const headers: Record<string, string> = { Accept: "text/event-stream", ...authHeaders() };
  if (lastId > 0) headers["Last-Event-ID"] = String(lastId);
  const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, { headers, signal });
  if (!resp.ok || !resp.body) {
    const err = await problemOf(resp);
    if (resp.status === 401) onUnauthorized(unauthorizedMessage(err));
    throw err;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(frame, on);
    }
  }
}

function dispatch(frame: string, on: StreamHandlers): void {
  let event = "message";
  const data: string[] = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue; // keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "metric") on.metric(payload as MetricPoint);
  else if (event === "status") on.status(payload as Job);
}

/** Downloads need the Authorization header: fetch the body as a blob, then save it via an object URL. */
export async function download(path: string, filename: string): Promise<number> {
  const resp = await fetch(path, { headers: authHeaders() });
  if (!resp.ok) throw await problemOf(resp);
  const blob = await resp.blob();
  const disposition = resp.headers.get("content-disposition") ?? "";
  const named = /filename="?([^";]+)"?/.exec(disposition);
  saveBlob(blob, named ? named[1] : filename);
  return blob.size;
}

/** Saves bytes made or fetched in the page as a file, through an object URL. */
export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A dataset answered 202 "validating": poll it until the server's check ends. A check that
 * refused the file becomes an ApiError with its reason, like a 422 at upload would. */
export async function waitDataset(d: Dataset, intervalMs = 500): Promise<Dataset> {
  let current = d;
  while (current.status === "validating") {
    await new Promise((r) => setTimeout(r, intervalMs));
    current = await call<Dataset>(`/v1/datasets/${encodeURIComponent(d.id)}`);
  }
  if (current.status === "failed") {
    throw new ApiError(422, { title: "Unprocessable content", status: 422, detail: current.status_reason ?? "the file was refused" });
  }
  return current;
}

/** multipart upload through XMLHttpRequest, whose upload events report progress (fetch has none). */
export function uploadDataset(form: FormData, onProgress: (loaded: number, total: number) => void): Promise<Dataset> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/datasets");
    xhr.setRequestHeader("Authorization", `Bearer ${getKey()}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.onerror = () => reject(new ApiError(0, { title: "Network error", status: 0, detail: "the upload did not reach the server" }));
    xhr.onload = () => {
      let body: any = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as Dataset);
      else {
        const err = new ApiError(xhr.status, { title: xhr.statusText, status: xhr.status, detail: "", ...(body ?? {}) });
        if (xhr.status === 401) onUnauthorized(unauthorizedMessage(err));
        reject(err);
      }
    };
    xhr.send(form);
  });
}

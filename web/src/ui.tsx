// Small shared pieces of UI.
import type { ComponentChildren } from "preact";
import { ApiError } from "./api";

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge status-${status}`} data-status={status}>{status}</span>;
}

export function Progress({ value }: { value: number }) {
  const pct = Math.round(Math.max(0, Math.min(1, value || 0)) * 100);
  return (
    <span class="progress" title={`${pct}%`}>
      <span class="bar"><span style={{ width: `${pct}%` }} /></span>
      <span class="pct">{pct}%</span>
    </span>
  );
}

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof ApiError
    ? `${error.problem.title || "Error"} (${error.status}): ${error.problem.detail}`
    : error instanceof Error ? error.message : String(error);
  return <p class="error" role="alert">{text}</p>;
}

export function Tags({ tags }: { tags?: string[] | null }) {
  if (!tags || !tags.length) return null;
  return <span class="tags">{tags.map((t) => <a class="tag" href={`#/jobs?tag=${encodeURIComponent(t)}`}>{t}</a>)}</span>;
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card">
      <div class="section-head"><h2>{title}</h2>{actions}</div>
      {children}
    </section>
  );
}

export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.problem.detail || err.problem.title;
  return err instanceof Error ? err.message : String(err);
}

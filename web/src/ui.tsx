// Small shared pieces of UI.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
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

/** A button that asks before it acts (cancel, delete): the first click shows the question,
 * "yes" acts, "no" goes back. */
export function Confirm({ id, label, question, yes, disabled, onConfirm, small }: {
  id: string; label: string; question: string; yes: string; disabled?: boolean; small?: boolean; onConfirm: () => void;
}) {
  const [asking, setAsking] = useState(false);
  const size = small ? "small " : "";
  if (!asking) return <button id={id} class={`${size}danger`} disabled={disabled} onClick={() => setAsking(true)}>{label}</button>;
  return (
    <span class="confirm" role="group" aria-label={question}>
      <span class="small">{question}</span>
      <button id={`${id}-yes`} class={`${size}danger`} disabled={disabled} onClick={() => { setAsking(false); onConfirm(); }}>{yes}</button>
      <button id={`${id}-no`} class={`${size}`.trim()} onClick={() => setAsking(false)}>No</button>
    </span>
  );
}

// The job page's Logs: what the worker logged while it ran each attempt (phases, each epoch's
// metrics, warnings, tracebacks), from GET /v1/jobs/{id}/logs. A running job's lines are
// fetched again every few seconds from the line already shown (`since`), until it has ended.
import { useEffect, useRef, useState } from "preact/hooks";
import { getKey, problemOf } from "../api";
import type { Job } from "../types";
import { TERMINAL } from "../types";
import { ErrorBox, Section } from "../ui";

const POLL_MS = 2000;

async function logLines(id: string, attempt: number, since: number, signal: AbortSignal): Promise<string[]> {
  const query = new URLSearchParams({ attempt: String(attempt), since: String(since) });
  const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/logs?${query}`, {
    headers: { Accept: "text/plain", Authorization: `Bearer ${getKey()}` }, signal,
  });
  if (!resp.ok) throw await problemOf(resp);
  return (await resp.text()).split("\n").slice(0, -1); // each line ends with a newline
}

export function JobLogs({ job }: { job: Job }) {
  const [picked, setPicked] = useState<number | null>(null);
  const attempt = picked ?? job.attempt; // the latest, until another is chosen
  const [lines, setLines] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const ended = useRef(TERMINAL.has(job.status));
  ended.current = TERMINAL.has(job.status);

  useEffect(() => {
    const ctl = new AbortController();
    let shown: string[] = [];
    setLines([]);
    setError(null);
    (async () => {
      while (!ctl.signal.aborted) {
        // Read the status first: a worker stores its lines before the job's final status.
        const last = ended.current;
        try {
          const more = await logLines(job.id, attempt, shown.length, ctl.signal);
          if (more.length) setLines((shown = [...shown, ...more]));
        } catch (err) {
          if (!ctl.signal.aborted) setError(err);
          return;
        }
        if (last) return;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    })();
    return () => ctl.abort();
  }, [job.id, attempt]);

  const tabs = Array.from({ length: job.attempt }, (_, i) => i + 1);
  return (
    <Section title="Logs" actions={tabs.length > 1 && (
      <div class="tabs" role="tablist">
        {tabs.map((n) => (
          <button role="tab" aria-selected={n === attempt} class={n === attempt ? "small active" : "small"}
            onClick={() => setPicked(n)}>attempt {n}</button>
        ))}
      </div>
    )}>
      {error ? <ErrorBox error={error} /> : null}
      {lines.length
        ? <pre class="logs" id="job-logs" data-attempt={attempt}>{lines.join("\n")}</pre>
        : <p class="muted" id="job-logs-empty">{ended.current ? "This attempt logged nothing." : "No lines yet: they appear once the worker starts the job."}</p>}
    </Section>
  );
}

// Hash routes: "#/jobs/ID?x=1" -> { path: ["jobs", "ID"], query }.
import { useEffect, useState } from "preact/hooks";

export interface Route {
  path: string[];
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function navigate(hash: string): void {
  if (location.hash !== hash) location.hash = hash;
}

/** Changes some query parameters of the current route in place (no new history entry), so a
 * view's state (columns, filters, chart settings) lives in its shareable URL. An empty
 * value removes the parameter. */
export function setQuery(updates: Record<string, string | null | undefined>): void {
  const { path, query } = parseHash(location.hash);
  for (const [k, v] of Object.entries(updates)) {
    if (v === null || v === undefined || v === "") query.delete(k);
    else query.set(k, v);
  }
  const q = query.toString().replace(/%2C/g, ",").replace(/%2F/g, "/");
  const hash = `#/${path.map(encodeURIComponent).join("/")}${q ? `?${q}` : ""}`;
  if (hash === location.hash) return;
  history.replaceState(null, "", hash);
  dispatchEvent(new HashChangeEvent("hashchange"));
}

/** A comma-separated list in the query ("ids=a,b"). */
export const listParam = (query: URLSearchParams, key: string) => (query.get(key) ?? "").split(",").filter(Boolean);

/** Calls fn now and every `ms` while mounted (and the tab is visible); fn gets an AbortSignal. */
export function usePoll(fn: (signal: AbortSignal) => Promise<void> | void, ms: number, deps: unknown[]): void {
  useEffect(() => {
    const ctl = new AbortController();
    let timer = 0;
    const tick = async () => {
      if (document.visibilityState !== "hidden") {
        try {
          await fn(ctl.signal);
        } catch {
          /* the view shows its own errors */
        }
      }
      if (!ctl.signal.aborted) timer = window.setTimeout(tick, ms);
    };
    tick();
    return () => {
      ctl.abort();
      clearTimeout(timer);
    };
  }, deps);
}

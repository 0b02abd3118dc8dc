// The app shell: sign-in, navigation and hash routes (#/jobs, #/jobs/ID, #/compare, ...).
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, call, clearKey, getKey, setKey, setUnauthorizedHandler, unauthorizedMessage } from "./api";
import { navigate, useRoute } from "./route";
import "./style.css";
import { initTheme, toggleTheme, useTheme } from "./theme";
import { ComparePage } from "./views/compare";
import { DatasetsPage } from "./views/datasets";
import { JobPage } from "./views/job";
import { JobsPage } from "./views/jobs";
import { SubmitPage } from "./views/submit";
import { SweepPage, SweepsPage } from "./views/sweeps";

function SignIn({ message, onDone }: { message: string; onDone: () => void }) {
  const [key, setValue] = useState("");
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState(message);
  const [busy, setBusy] = useState(false);
  async function submit(e: Event) {
    e.preventDefault();
    const k = key.trim();
    if (!k) {
      setError("Paste an API key first.");
      return;
    }
    setBusy(true);
    try {
      await call("/v1/jobs?page_size=1", { key: k });
      setKey(k, remember);
      onDone();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setError(unauthorizedMessage(err));
      else setError(`Could not reach the API: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin">
      <h1><Logo /> drtrain</h1>
      <p class="muted">Training service for deep belief networks and MLPs with diversifying regularization.</p>
      <form onSubmit={submit} class="card" noValidate>
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autocomplete="off" placeholder="drt_…" value={key}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)} autofocus />
        <label class="remember"><input type="checkbox" id="remember-key" checked={remember}
          onChange={(e) => setRemember((e.target as HTMLInputElement).checked)} /> Remember this key on this device</label>
        <button type="submit" class="primary" disabled={busy}>{busy ? "Checking…" : "Sign in"}</button>
        {error && <p class="error" role="alert" id="signin-error">{error}</p>}
        <p class="muted small"><code>drtrain up</code> prints a key and writes it to its data folder (<code>api-key</code>).
          The key stays in this tab only (session storage), unless you ask to remember it: then it stays in this
          browser's local storage, so links shared with you open in any tab, until you sign out.</p>
      </form>
    </main>
  );
}

function Logo() {
  return <img src={`${import.meta.env.BASE_URL}favicon.svg`} alt="" width={22} height={22} class="logo" />;
}

function ThemeToggle() {
  const theme = useTheme();
  return (
    <button class="theme small" id="theme-toggle" title="Switch between light and dark (remembered on this device)"
      onClick={toggleTheme}>{theme === "dark" ? "☀ Light" : "☾ Dark"}</button>
  );
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(getKey()));
  const [message, setMessage] = useState("");
  const route = useRoute();

  useEffect(() => {
    setUnauthorizedHandler((msg) => {
      clearKey();
      setMessage(msg);
      setSignedIn(false);
    });
  }, []);

  if (!signedIn) return <SignIn message={message} onDone={() => { setMessage(""); setSignedIn(true); }} />;

  const [section, id] = route.path;
  let page;
  if (section === "jobs" && id) page = <JobPage key={id} id={id} />;
  else if (section === "compare") page = <ComparePage />;
  else if (section === "sweeps" && id) page = <SweepPage key={id} id={id} />;
  else if (section === "sweeps") page = <SweepsPage />;
  else if (section === "datasets") page = <DatasetsPage />;
  else if (section === "submit") page = <SubmitPage key={route.query.toString()} from={route.query.get("from")} />;
  else page = <JobsPage />;

  const link = (href: string, label: string, active: boolean) => (
    <a href={href} class={active ? "active" : ""}>{label}</a>
  );
  return (
    <>
      <header class="top">
        <a href="#/jobs" class="brand"><Logo /> drtrain</a>
        <nav>
          {link("#/jobs", "Jobs", !section || section === "jobs")}
          {link("#/compare", "Compare", section === "compare")}
          {link("#/sweeps", "Sweeps", section === "sweeps")}
          {link("#/datasets", "Datasets", section === "datasets")}
          {link("#/submit", "New job", section === "submit")}
        </nav>
        <span class="spacer" />
        <a href="/docs" class="muted small">API docs</a>
        <ThemeToggle />
        <button class="link" onClick={() => { clearKey(); setSignedIn(false); navigate("#/jobs"); }}>Sign out</button>
      </header>
      <main class="page">{page}</main>
    </>
  );
}

initTheme();
render(<App />, document.getElementById("root")!);

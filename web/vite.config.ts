// Builds the single-page app into api/static/app/, which the API serves: index.html at "/",
// everything else under "/app/". Nothing is loaded from another host at run time.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { defineConfig, type Plugin } from "vite";

const WEB = import.meta.dirname;
const SOURCES = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts", "src", "public"];

function files(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).flatMap((name) => files(join(path, name)));
}

/** sha256 over the sources (path, NUL, bytes, NUL; sorted by path): tests/web/test_build.py
 * recomputes it, so a source change without `npm run build` fails the tests. */
export function sourcesDigest(): string {
  const hash = createHash("sha256");
  const all = SOURCES.flatMap((s) => files(join(WEB, s))).map((f) => relative(WEB, f).split(sep).join("/")).sort();
  for (const rel of all) {
    hash.update(rel + "\0");
    hash.update(readFileSync(join(WEB, rel)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

function buildInfo(): Plugin {
  return {
    name: "drtrain-build-info",
    generateBundle() {
      this.emitFile({ type: "asset", fileName: "build-info.json",
        source: JSON.stringify({ sources_sha256: sourcesDigest(), built_by: "cd web && npm run build" }, null, 2) + "\n" });
    },
  };
}

export default defineConfig({
  base: "/app/",
  plugins: [buildInfo()],
  build: {
    outDir: "../api/static/app",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    modulePreload: { polyfill: false },
  },
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  server: {
    // `npm run dev` against a running `drtrain up` on the default port.
    proxy: { "/v1": "http://127.0.0.1:8000" },
  },
});

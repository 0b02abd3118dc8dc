// The job page's "System" charts: what the worker's process used at each epoch's end (CPU,
// memory and, on a GPU, its utilisation and memory), recorded as metric points named in
// src/names.ts (SYSTEM_METRICS).
import { useMemo } from "preact/hooks";
import { Chart, type ChartData } from "../chart";
import { X_TITLES } from "../chartview";
import { stepOf } from "../metrics";
import type { SystemMetric } from "../names";
import type { MetricPoint } from "../types";
import { Section } from "../ui";

const MIB = 2 ** 20;

type Line = [SystemMetric, string, number, boolean?]; // name, label, divisor, dashed

/** One x per step of the run (its epochs in the order they ran): system figures belong to the
 * run as a whole, not to one phase's epoch numbers. */
export function systemChart(points: MetricPoint[], lines: Line[]): ChartData {
  const step = stepOf(points);
  const values = lines.map(() => new Map<number, number>());
  for (const p of [...points].sort((a, b) => a.seq - b.seq)) {
    const i = lines.findIndex(([name]) => name === p.name);
    if (i >= 0) values[i].set(step(p), p.value / lines[i][2]);
  }
  const x = [...new Set(values.flatMap((v) => [...v.keys()]))].sort((a, b) => a - b);
  return { x, series: lines.map(([, label, , dash], i) => ({ label, dash, values: x.map((e) => values[i].get(e) ?? null) })) };
}

export function SystemCharts({ points, version }: { points: MetricPoint[]; version: number }) {
  const charts = useMemo(() => {
    const has = new Set(points.map((p) => p.name));
    const memory: Line[] = [["sys.rss_bytes", "resident (RSS)", MIB]];
    if (has.has("sys.gpu_memory_allocated_bytes")) memory.push(["sys.gpu_memory_allocated_bytes", "GPU allocated", MIB]);
    if (has.has("sys.gpu_memory_peak_bytes")) memory.push(["sys.gpu_memory_peak_bytes", "GPU peak", MIB, true]);
    return [
      has.has("sys.cpu_percent") && { name: "cpu", title: "CPU (% of one core)", data: systemChart(points, [["sys.cpu_percent", "worker process", 1]]) },
      has.has("sys.rss_bytes") && { name: "memory", title: "Memory (MiB)", data: systemChart(points, memory) },
      has.has("sys.gpu_utilization_percent") && { name: "gpu", title: "GPU utilisation (%)", data: systemChart(points, [["sys.gpu_utilization_percent", "GPU", 1]]) },
    ].filter((c) => !!c) as { name: string; title: string; data: ChartData }[];
  }, [version]);
  if (!charts.length) return null;
  return (
    <Section title="System">
      <div class="charts">
        {charts.map((c) => <Chart key={c.name} testid={`chart-system-${c.name}`} title={c.title} data={c.data} xLabel={X_TITLES.step} />)}
      </div>
    </Section>
  );
}

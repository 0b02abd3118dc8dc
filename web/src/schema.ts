// The JobSpec's JSON schema as the server publishes it in /openapi.json. The submit form takes
// its defaults, the choices of its selects and its help text from here, so it keeps no copy of
// them: a divergence or a default changed in drtrain/jobs/spec.py reaches the form as it is.

type Schema = Record<string, any>;

export interface JobSchema {
  root: Schema;
  all: Record<string, Schema>;
}

export async function loadJobSchema(): Promise<JobSchema> {
  const res = await fetch("/openapi.json");
  if (!res.ok) throw new Error(`/openapi.json answered ${res.status}`);
  const all = (await res.json()).components?.schemas ?? {};
  if (!all.JobSpec) throw new Error("/openapi.json holds no JobSpec schema");
  return { root: all.JobSpec, all };
}

const refName = (ref: string) => ref.split("/").pop()!;

/** The object schema a property holds (directly, or as the non-null member of a nullable one). */
function objectOf(prop: Schema, all: Record<string, Schema>): Schema | null {
  const ref = prop.$ref ?? (prop.anyOf ?? []).find((s: Schema) => s.$ref)?.$ref;
  return ref ? all[refName(ref)] ?? null : null;
}

/** The schema of the field at a dotted path ("finetune.dr.distance"), or null. */
export function schemaAt(js: JobSchema, path: string): Schema | null {
  let node: Schema | null = js.root;
  for (const key of path.split(".")) {
    const holder: Schema | null = node && (node.properties ? node : objectOf(node, js.all));
    node = holder?.properties?.[key] ?? null;
  }
  return node;
}

/** The string values a field accepts when it is a choice (a Literal in the spec), else []. */
export function choices(js: JobSchema, path: string): string[] {
  const node = schemaAt(js, path);
  if (!node) return [];
  const members: Schema[] = node.anyOf ?? [node];
  const values = members.flatMap((m) => m.enum ?? ("const" in m ? [m.const] : []));
  return values.filter((v): v is string => typeof v === "string");
}

/** Defaults of an object schema, following $ref into nested models (default_factory sections). */
function defaultsOf(schema: Schema, all: Record<string, Schema>, depth = 0): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [k, prop] of Object.entries<Schema>(schema.properties ?? {})) {
    if ("default" in prop) {
      out[k] = prop.default;
      continue;
    }
    const inner = objectOf(prop, all);
    if (inner && depth < 4) out[k] = defaultsOf(inner, all, depth + 1);
    else if ((prop.anyOf ?? []).some((s: Schema) => s.type === "null")) out[k] = null;
  }
  return out;
}

/** The whole spec's defaults; a required field without one (the dataset) takes its first example. */
export function specDefaults(js: JobSchema): Record<string, any> {
  const out = defaultsOf(js.root, js.all);
  for (const key of js.root.required ?? []) {
    const examples = js.root.properties?.[key]?.examples;
    if (!(key in out) && Array.isArray(examples) && examples.length) out[key] = examples[0];
  }
  return out;
}

/** What a nullable section ("finetune.dr") holds when it is switched on: its model's defaults. */
export function sectionDefaults(js: JobSchema, path: string): Record<string, any> {
  const node = schemaAt(js, path);
  const inner = node && objectOf(node, js.all);
  return inner ? defaultsOf(inner, js.all) : {};
}

/** Descriptions of the JobSpec fields by dotted path, for the fields' help text. */
export function describe(js: JobSchema, schema: Schema = js.root, prefix = "",
                         out: Record<string, string> = {}, depth = 0): Record<string, string> {
  for (const [k, prop] of Object.entries<Schema>(schema.properties ?? {})) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (prop.description) out[path] = prop.description;
    const inner = objectOf(prop, js.all);
    if (inner && depth < 4) describe(js, inner, path, out, depth + 1);
  }
  return out;
}

// The declared types of pkg/otaweb.js checked against what the API really dispatches.
//
// Every browser test's Chromium records each CustomEvent dispatched on a plain EventTarget
// (the updater's, the EnOS agent's and the MQTT client's: elements are not recorded) with a
// JSON-safe copy of its detail. When the browser closes, one example of each distinct event
// shape becomes a TypeScript constant typed by the event maps of the generated otaweb.d.ts,
// and `tsc --strict` compiles it: an event name no map declares, a detail key the type lacks,
// a missing required key or a wrong value type fails the suite that saw it.
import { execFile } from "node:child_process";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { basename, join, relative } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** How many distinct shapes one suite keeps; more would only slow tsc down. */
const MAX_SHAPES = 400;

// Runs in every page before its scripts. Only CustomEvents on targets whose prototype is
// EventTarget's own are otaweb's: the stand-in radio and the page's elements use others.
const INIT = `(() => {
  const dispatch = EventTarget.prototype.dispatchEvent;
  const plain = (v, depth) => {
    if (depth > 6) return { __deep: true };
    if (v instanceof Error) {
      const out = { name: v.name, message: v.message };
      for (const k of Object.keys(v)) out[k] = plain(v[k], depth + 1);
      return { __error: out };
    }
    if (v instanceof Uint8Array) return { __bytes: v.length };
    if (typeof v === "number" && !Number.isFinite(v)) return { __number: String(v) };
    if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
    if (v && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x, depth + 1)]));
    }
    return v === undefined ? { __undefined: true } : v;
  };
  EventTarget.prototype.dispatchEvent = function (event) {
    if (event instanceof CustomEvent && Object.getPrototypeOf(this) === EventTarget.prototype) {
      try {
        globalThis.__otawebObserved?.({ type: event.type, detail: plain(event.detail, 0) });
      } catch {}
    }
    return dispatch.call(this, event);
  };
})();`;

/** The shape of a recorded value: keys and value kinds, not the values. */
function shape(v) {
  if (Array.isArray(v)) return `[${v.map(shape).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${k}:${shape(v[k])}`)
      .join(",")}}`;
  }
  return v === null ? "null" : typeof v;
}

/** A recorded value as a TypeScript expression. */
function literal(v) {
  if (Array.isArray(v)) return `[${v.map(literal).join(", ")}]`;
  if (v && typeof v === "object") {
    if ("__bytes" in v) return `new Uint8Array(${v.__bytes})`;
    if ("__number" in v) return v.__number;
    if ("__undefined" in v) return "undefined";
    if ("__error" in v) return literal(v.__error);
    return `{ ${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}: ${literal(x)}`)
      .join(", ")} }`;
  }
  return JSON.stringify(v);
}

/** The TypeScript source that types each recorded example. */
export function typedSource(records, pkgPath) {
  const seen = new Set();
  const lines = [
    `import type { EnosAgentEventMap, MqttEventMap, UpdaterEventMap } from ${JSON.stringify(pkgPath)};`,
    "type In<M, K extends string> = K extends keyof M ? M[K] : never;",
    "type Detail<K extends string> = In<UpdaterEventMap, K> | In<EnosAgentEventMap, K> | In<MqttEventMap, K>;",
  ];
  for (const { type, detail } of records) {
    const key = `${type} ${shape(detail)}`;
    if (seen.has(key) || seen.size >= MAX_SHAPES) continue;
    seen.add(key);
    lines.push(`export const e${seen.size}: Detail<${JSON.stringify(type)}> = ${literal(detail)};`);
  }
  return { source: `${lines.join("\n")}\n`, shapes: seen.size };
}

/**
 * Compiles `records` as `dir/name.ts` against pkg/otaweb.d.ts with tsc --strict (the project's
 * tests/types/tsconfig.json); resolves to tsc's complaints, "" when there are none.
 */
export async function compileObserved(records, root, dir, name) {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.ts`);
  const { source } = typedSource(records, relative(dir, join(root, "pkg", "otaweb.js")));
  // Written whole, then renamed: another suite's tsc never reads half a file.
  writeFileSync(`${file}.tmp`, source);
  renameSync(`${file}.tmp`, file);
  const config = join(dir, `${name}.tsconfig.json`);
  const base = relative(dir, join(root, "tests", "types", "tsconfig.json"));
  writeFileSync(config, JSON.stringify({ extends: base, include: [], files: [`${name}.ts`] }));
  try {
    await run(join(root, "node_modules", ".bin", "tsc"), ["-p", config], { cwd: root });
    return "";
  } catch (e) {
    return `${e.stdout}${e.stderr}`;
  }
}

/**
 * Starts recording in `context` (a Playwright browser context). `check()` compiles what was
 * seen against pkg/otaweb.d.ts and throws tsc's complaints; it is a no-op when the suite
 * dispatched nothing.
 */
export async function observeApiEvents(context, root) {
  const records = [];
  await context.exposeBinding("__otawebObserved", (_source, record) => {
    records.push(record);
  });
  await context.addInitScript(INIT);
  const check = async () => {
    if (records.length === 0) return;
    const dir = join(root, "target", "types-observed");
    const name = `${basename(process.argv[1] ?? "suite", ".mjs").replace(/\W/g, "-")}-${process.pid}`;
    const complaints = await compileObserved(records, root, dir, name);
    if (complaints)
      throw new Error(`events the API dispatched do not match pkg/otaweb.d.ts (${join(dir, name)}.ts):\n${complaints}`);
  };
  return { check, records };
}

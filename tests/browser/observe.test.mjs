// The event-type check of observe.mjs has teeth: what the API really dispatches compiles
// against pkg/otaweb.d.ts, and a wrong name, an undeclared key or a wrong value type does not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { root } from "./helpers.mjs";
import { compileObserved, typedSource } from "./observe.mjs";

const dir = join(root, "target", "types-observed", "self-test");

/** Compiles `records` as observe.mjs does; resolves to tsc's complaints ("" when none). */
const compile = (name, records) => compileObserved(records, root, dir, name);

const progress = { confirmed: 4096, sent: 8192, total: 98304, bytesPerSecond: 51200, secondsLeft: 1.84 };
const refused = {
  __error: { name: "OtawebError", message: "the image was refused", code: "digest-mismatch", kind: "verification-failed", retryable: false },
};

test("declared shapes compile, one example per shape", async () => {
  const records = [
    { type: "progress", detail: progress },
    { type: "progress", detail: { ...progress, confirmed: 8192, sent: 12288 } },
    { type: "progress", detail: { ...progress, secondsLeft: null } },
    { type: "error", detail: refused },
    { type: "message", detail: { topic: "a/b", payload: { __bytes: 3 }, text: "abc" } },
    { type: "versions-offered", detail: { firmwares: [{ version: "2", fileUrl: "/f", fileSize: 1, signMethod: "md5", sign: "00" }] } },
  ];
  assert.equal(typedSource(records, "x").shapes, 5);
  assert.equal(await compile("good", records), "");
});

test("an undeclared event, an extra key, a missing key and a wrong type are each refused", async () => {
  const cases = {
    name: [{ type: "progres", detail: progress }, /never/],
    extra: [{ type: "progress", detail: { ...progress, percent: 4 } }, /percent/],
    missing: [{ type: "progress", detail: { confirmed: 1, sent: 1, total: 2, bytesPerSecond: 0 } }, /secondsLeft/],
    type: [{ type: "version", detail: { current: 0, offered: "2" } }, /number.*string/],
    kind: [{ type: "error", detail: { __error: { ...refused.__error, kind: "oops" } } }, /oops/],
  };
  for (const [name, [record, complaint]] of Object.entries(cases)) {
    const out = await compile(`bad-${name}`, [record]);
    assert.match(out, complaint, `${name}: ${out}`);
  }
});

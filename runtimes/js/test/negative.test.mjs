// The negative golden vectors (tests/vectors/negative/cases.json): every case is built on a fresh
// copy of the shipped bundle and loaded with its options; a control case (code null) must load,
// every other must be refused with a BundleError whose reason code is the case's.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import test from "node:test";
import * as ort from "onnxruntime-node";

import { BundleError, Engine, NodeDirectorySource, REASON_CODES, SignatureError } from "../dist/index.js";
import { CASES_FILE, buildCase, loadOptions, readCases } from "../test-support/negative.mjs";

const doc = existsSync(CASES_FILE) ? readCases() : null;

test("negative vectors: every case refused with its reason code, every control loads", { skip: doc ? false : `no ${CASES_FILE}` }, async (t) => {
  assert.ok(doc.cases.length > 0);
  const names = new Set();
  for (const c of doc.cases) {
    assert.ok(!names.has(c.name), `case names are unique (${c.name})`);
    names.add(c.name);
    if (c.code !== null) assert.ok(REASON_CODES.includes(c.code), `${c.name}: ${c.code} is a reason code`);
    await t.test(`${c.name} -> ${c.code ?? "loads"}`, { timeout: 60_000 }, async () => {
      const [bundle, cleanup] = buildCase(doc, c);
      try {
        const load = Engine.load(new NodeDirectorySource(bundle), { ort, ...loadOptions(doc, c) });
        if (c.code === null) {
          const engine = await load;
          await engine.dispose();
          return;
        }
        await assert.rejects(load, (exc) => {
          assert.ok(exc instanceof BundleError, `${c.why}: expected a BundleError, got ${exc?.constructor?.name}: ${exc?.message}`);
          assert.equal(exc.code, c.code, `${c.why}: got ${exc.code}: ${exc.message}`);
          if (c.code.startsWith("signature-")) assert.ok(exc instanceof SignatureError, "a SignatureError");
          return true;
        });
      } finally {
        cleanup();
      }
    });
  }
});

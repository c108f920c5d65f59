import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import test from "node:test";
import { join } from "node:path";

import { MANIFEST_SCHEMA } from "../dist/index.js";
import { PACKAGE, REPO, readJson } from "../test-support/helpers.mjs";

test("the schema copy equals mmedge/bundle/manifest.schema.json (else run `npm run sync-schema`)", () => {
  const original = readJson(join(REPO, "mmedge/bundle/manifest.schema.json"));
  assert.deepEqual(MANIFEST_SCHEMA, original);
  execFileSync(process.execPath, [join(PACKAGE, "scripts/sync-schema.mjs"), "--check"], { stdio: "pipe" });
});

// Bundles of an encoder adapted by `mmedge adapt` (docs/bundle-format.md, "Adapted encoders") state a
// preparation this runtime does not implement yet: they are refused with code `unsupported`.
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import { BundleError, Engine, NodeDirectorySource, checkAdaptedRules } from "../dist/index.js";
import { REPO } from "../test-support/helpers.mjs";
import { CASES_FILE, readCases } from "../test-support/negative.mjs";

const doc = existsSync(CASES_FILE) ? readCases() : null;

function adaptedCopy(edit) {
  const dir = mkdtempSync(join(tmpdir(), "mmedge-adapted-"));
  const bundle = join(dir, "bundle.mmedge");
  cpSync(join(REPO, doc.base), bundle, { recursive: true, verbatimSymlinks: true });
  const path = join(bundle, "manifest.json");
  const m = JSON.parse(readFileSync(path, "utf8"));
  edit(m);
  writeFileSync(path, JSON.stringify(m, null, 1));
  return [bundle, () => rmSync(dir, { recursive: true, force: true })];
}

const bicubic = (m) => {
  m.preprocessing.resize = "pillow-bicubic";
  m.preprocessing.fit = "stretch";
  m.preprocessing.num_images = 1;
  delete m.preprocessing.pad_color;
};
const bert = (m) => {
  Object.assign(m.tokenizer, { kind: "bert-wordpiece", strip_accents: true, clean_text: true, handle_chinese_chars: true,
    continuing_subword_prefix: "##", max_input_chars_per_word: 100, template: ["[CLS]", "$text", "[SEP]"],
    special_tokens: [], cls_id: 2, sep_id: 3 });
  delete m.tokenizer.split_regex;
};

for (const [name, edit] of [["pillow-bicubic preprocessing", bicubic], ["bert-wordpiece tokenizer", bert],
  ["both", (m) => { bicubic(m); bert(m); }]]) {
  test(`an adapted encoder's bundle (${name}) is refused as unsupported`, { skip: doc ? false : `no ${CASES_FILE}` }, async () => {
    const [bundle, cleanup] = adaptedCopy(edit);
    try {
      await assert.rejects(Engine.load(new NodeDirectorySource(bundle), { ort }), (exc) => {
        assert.ok(exc instanceof BundleError, `a BundleError, got ${exc?.constructor?.name}: ${exc?.message}`);
        assert.equal(exc.code, "unsupported", exc.message);
        assert.match(exc.message, /adapted encoder/);
        return true;
      });
    } finally {
      cleanup();
    }
  });
}

test("checkAdaptedRules passes a format-1 classifier manifest", { skip: doc ? false : `no ${CASES_FILE}` }, () => {
  const m = JSON.parse(readFileSync(join(REPO, doc.base, "manifest.json"), "utf8"));
  checkAdaptedRules(m);
});

import assert from "node:assert/strict";
import test from "node:test";

import { decideOffline, makePolicy, policyFromThresholds, shouldStop, softmaxMax, ConfigError } from "../dist/index.js";
import { CONTROLLER_VECTORS, policyOf, readJson } from "../test-support/helpers.mjs";

const vectors = readJson(CONTROLLER_VECTORS);

test("controller vectors: every case", async (t) => {
  assert.equal(vectors.version, 1);
  assert.ok(vectors.cases.length >= 16);
  for (const c of vectors.cases) {
    await t.test(c.name, () => {
      const policy = makePolicy(policyOf(c.policy));
      const got = decideOffline(policy, c.answers, c.confidences, c.max_probabilities, c.stage_ms ?? null);
      assert.equal(got, c.expected_exit);
    });
  }
});

test("shouldStop: the last exit always stops, before it the policy decides", () => {
  const state = { answers: [1, 1], confidences: [0.1, 0.1], maxProbabilities: [0.1, 0.1], elapsedMs: 0 };
  assert.equal(shouldStop(makePolicy("full"), state, 2), true);
  assert.equal(shouldStop(makePolicy("full"), state, 3), false);
  assert.equal(shouldStop(makePolicy({ kind: "patience", patience: 2 }), state, 3), true);
  assert.equal(shouldStop(makePolicy({ kind: "latency_budget", threshold: 0, budgetMs: 5 }), { ...state, elapsedMs: 4 }, 3, 2), true);
  assert.equal(shouldStop(makePolicy({ kind: "latency_budget", threshold: 0, budgetMs: 5 }), { ...state, elapsedMs: 4 }, 3, 1), false);
  assert.equal(shouldStop(makePolicy({ kind: "latency_budget", threshold: 0, budgetMs: 5 }), { ...state, elapsedMs: 4 }, 3), false);
});

test("softmaxMax in double precision", () => {
  assert.equal(softmaxMax([0, 0]), 0.5);
  assert.ok(Math.abs(softmaxMax([1000, 0, -1000]) - 1) < 1e-12);
  assert.ok(Math.abs(softmaxMax([1, 2, 3]) - Math.exp(3) / (Math.exp(1) + Math.exp(2) + Math.exp(3))) < 1e-15);
});

test("policyFromThresholds: as the Python runtime reads a manifest", () => {
  const base = { source: "default", confidence: 0.91, max_probability: 0.8, patience: 3, keep_ratio: 1 };
  assert.deepEqual({ ...policyFromThresholds({ ...base, policy: "confidence" }) },
    { kind: "confidence", threshold: 0.91, patience: 3, budgetMs: 0 });
  assert.equal(policyFromThresholds({ ...base, policy: "max_probability" }).threshold, 0.8);
  assert.equal(policyFromThresholds({ ...base, policy: "latency_budget" }).kind, "confidence");
  assert.equal(policyFromThresholds({ ...base, policy: "patience" }).patience, 3);
  assert.equal(policyFromThresholds({ ...base, policy: "full" }).kind, "full");
});

test("invalid policies are ConfigErrors that list each problem", () => {
  assert.throws(() => makePolicy("fastest"), ConfigError);
  assert.throws(() => makePolicy({ kind: "confidence", threshold: 1.5 }), ConfigError);
  assert.throws(() => makePolicy({ kind: "confidence", threshold: Number.NaN }), ConfigError);
  assert.throws(() => makePolicy({ kind: "patience", patience: 0 }), ConfigError);
  assert.throws(() => makePolicy({ kind: "patience", patience: 1.5 }), ConfigError);
  assert.throws(() => makePolicy({ kind: "latency_budget" }), ConfigError);
  try {
    makePolicy({ kind: "nope", threshold: -1 });
    assert.fail("no error");
  } catch (exc) {
    assert.ok(exc instanceof ConfigError);
    assert.equal(exc.problems.length, 2);
  }
});

test("float32AtLeast: the in-graph threshold makes float32 comparisons equal the staged ones", async () => {
  const { float32AtLeast } = await import("../dist/index.js");
  for (const t of [0, 0.5, 0.9, 0.91, 0.99, 1, 1.0001, 1e-9, 0.3]) {
    const f = float32AtLeast(t);
    assert.ok(f >= t, `${t}`);
    assert.equal(Math.fround(f), f);
    // no float32 lies in [t, f): the one below f is < t
    const below = new Float32Array([f]);
    new Int32Array(below.buffer)[0] -= 1;
    if (f > 0) assert.ok(below[0] < t, `${t}`);
  }
  assert.equal(float32AtLeast(0.5), 0.5);
  assert.ok(float32AtLeast(0.9) > 0.9 && Math.fround(0.9) < 0.9);
});

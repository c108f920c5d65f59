/**
 * The adaptive-exit controller: after each stage, stop or go on (the spec's "The controller").
 *
 * - `confidence`: stop at the first exit whose learned confidence >= threshold;
 * - `max_probability`: stop at the first exit whose top softmax probability >= threshold;
 * - `patience`: stop once the answer has been the same at `patience` consecutive exits;
 * - `latency_budget`: stop before a stage whose expected time would take the total past
 *   `budgetMs` (the first stage always runs); also stop at confidence >= threshold when threshold > 0;
 * - `full`: run every stage.
 * The last exit always stops. `tests/vectors/controller.json` pins the decisions.
 */

import { ConfigError } from "./errors.js";
import type { Thresholds } from "./manifest.js";

export const POLICIES = ["confidence", "max_probability", "patience", "latency_budget", "full"] as const;
export type PolicyKind = (typeof POLICIES)[number];

export interface Policy {
  readonly kind: PolicyKind;
  /** confidence / max_probability threshold (and latency_budget's optional confidence threshold). */
  readonly threshold: number;
  /** patience: equal answers at this many consecutive exits. */
  readonly patience: number;
  /** latency_budget: the budget in milliseconds. */
  readonly budgetMs: number;
}

export interface PolicyInit {
  kind?: PolicyKind | string;
  threshold?: number;
  patience?: number;
  budgetMs?: number;
}

const isReal = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** A checked, frozen policy (defaults as in Python: confidence 0.9, patience 2, budget 0 ms). */
export function makePolicy(init: PolicyInit | PolicyKind | string = {}): Policy {
  const spec: PolicyInit = typeof init === "string" ? { kind: init } : init ?? {};
  if (typeof spec !== "object") throw new ConfigError(`a policy must be a name or an object, got ${typeof init}`, "exit policy");
  const policy = {
    kind: (spec.kind ?? "confidence") as PolicyKind,
    threshold: spec.threshold ?? 0.9,
    patience: spec.patience ?? 2,
    budgetMs: spec.budgetMs ?? 0,
  };
  const problems: string[] = [];
  if (typeof policy.kind !== "string" || !(POLICIES as readonly string[]).includes(policy.kind)) {
    problems.push(`policy ${JSON.stringify(policy.kind)} unknown; choose one of ${POLICIES.join(", ")}`);
  }
  if (!isReal(policy.threshold)) {
    problems.push(`threshold ${String(policy.threshold)} must be a finite number in [0, 1], e.g. 0.9`);
  } else if (policy.threshold < 0 || policy.threshold > 1.0001) {
    problems.push(`threshold ${policy.threshold} must be in [0, 1]`);
  }
  if (typeof policy.patience !== "number" || !Number.isInteger(policy.patience)) {
    problems.push(`patience ${String(policy.patience)} must be a whole number, e.g. 2`);
  } else if (policy.patience < 1) {
    problems.push(`patience ${policy.patience} must be at least 1`);
  }
  if (!isReal(policy.budgetMs)) {
    problems.push(`budgetMs ${String(policy.budgetMs)} must be a finite number of milliseconds, e.g. 5`);
  } else if (policy.kind === "latency_budget" && policy.budgetMs <= 0) {
    problems.push("latency_budget needs budgetMs > 0");
  }
  if (problems.length > 0) throw new ConfigError(problems, "exit policy");
  return Object.freeze(policy);
}

/** Largest softmax probability of `logits`, in double precision: 1 / sum_j exp(z_j - max z). */
export function softmaxMax(logits: ArrayLike<number>): number {
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) top = Math.max(top, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - top);
  return 1 / sum;
}

/** Index of the first maximum. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** What the controller has seen so far for one query. */
export interface ExitState {
  answers: number[];
  confidences: number[];
  maxProbabilities: number[];
  elapsedMs: number;
}

/** After the exit just run (index answers.length - 1): stop here? */
export function shouldStop(policy: Policy, state: ExitState, numStages: number, nextStageMs?: number | null): boolean {
  const i = state.answers.length - 1;
  if (i >= numStages - 1) return true;
  switch (policy.kind) {
    case "full":
      return false;
    case "confidence":
      return state.confidences[i] >= policy.threshold;
    case "max_probability":
      return state.maxProbabilities[i] >= policy.threshold;
    case "patience": {
      const recent = state.answers.slice(-policy.patience);
      return recent.length === policy.patience && recent.every((a) => a === recent[0]);
    }
    case "latency_budget":
      if (policy.threshold > 0 && state.confidences[i] >= policy.threshold) return true;
      return nextStageMs !== undefined && nextStageMs !== null && state.elapsedMs + nextStageMs > policy.budgetMs;
  }
}

/** The exit (0-based) a policy takes given every exit's outputs (calibration, test vectors). */
export function decideOffline(policy: Policy, answers: ArrayLike<number>, confidences: ArrayLike<number>,
  maxProbabilities: ArrayLike<number>, stageMs?: ArrayLike<number> | null): number {
  const n = answers.length;
  const state: ExitState = { answers: [], confidences: [], maxProbabilities: [], elapsedMs: 0 };
  for (let i = 0; i < n; i++) {
    state.answers.push(answers[i]);
    state.confidences.push(confidences[i]);
    state.maxProbabilities.push(maxProbabilities[i]);
    if (stageMs) state.elapsedMs += stageMs[i];
    const next = !stageMs || i + 1 >= n ? null : stageMs[i + 1];
    if (shouldStop(policy, state, n, next)) return i;
  }
  return n - 1;
}

/**
 * The policy a manifest's `thresholds` describe (a latency_budget there falls back to confidence,
 * since a budget is the app's).
 */
export function policyFromThresholds(th: Thresholds): Policy {
  const kind = th.policy !== "latency_budget" ? th.policy : "confidence";
  const threshold = kind === "max_probability" ? th.max_probability : th.confidence;
  return makePolicy({ kind, threshold, patience: th.patience });
}

import type { EarlyIdentity } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import type { ModelRow } from "./models.service.js";
import type { Inference, GenerateRequest, GenerateResult } from "./runtime.js";

/** What a generation route knows of its request before the caller is loaded: everything but who and which model. */
export type SpeculativeRequest = Omit<GenerateRequest, "orgId" | "model" | "signal" | "onToken">;

interface Started {
  orgId: string;
  model: ModelRow;
  result: Promise<GenerateResult>;
  startedAt: number;
  ac: AbortController;
  /** Text generated before the request was admitted, held until it is (streaming routes only). */
  held: string[];
  sink?: (text: string) => void;
}

/** A generation route's speculation (see Speculations): its key, and the generation started on it, if any. */
export interface Speculation {
  key: string;
  started: Started | null;
  /** Stops the speculative generation (the request failed before it could use it, or did not use it). */
  abandon(): void;
}

/**
 * Time-to-first-token hiding for the generation routes: the answer is started as soon as the credential is
 * identified and the body valid (see RouteDef.early), while the caller is loaded, the permission checked and the
 * request admitted against the plan's quotas (three statements and a commit, a few milliseconds), on the model
 * this credential's last admitted request of the same route and model name was given. Nothing it generates
 * leaves before the handler adopts it (Speculations.generate), which it does only after admission and only if the fresh resolution gave
 * the same model; otherwise it is abandoned, as it is when the request fails (the route layer calls abandon).
 * Abandoning takes the guess out, and only an admitted request puts one back: a credential refused since (a
 * revoked permission, a spent quota) costs one abandoned start per request it had under way, then none.
 * Concurrent requests of one credential all start early.
 */
export class Speculations {
  private readonly last = new Map<string, ModelRow>();

  constructor(
    private readonly runtime: () => Inference | null,
    private readonly max = 10_000,
  ) {}

  /** Starts the generation on this credential's last admitted model for the same route and model name, if any. */
  start(
    who: EarlyIdentity,
    route: string,
    modelName: string | undefined,
    req: SpeculativeRequest,
    stream: boolean,
  ): Speculation {
    const key = `${who.orgId}:${who.rateKey}:${route}:${modelName ?? "default"}`;
    const model = this.last.get(key);
    const runtime = this.runtime();
    if (!model || !runtime) return { key, started: null, abandon: () => undefined };
    const ac = new AbortController();
    const started: Started = {
      orgId: who.orgId,
      model,
      ac,
      held: [],
      startedAt: performance.now(),
      result: Promise.resolve() as never,
    };
    started.result = runtime.generate({
      ...req,
      orgId: who.orgId,
      model,
      signal: ac.signal,
      onToken: stream ? (text) => (started.sink ? started.sink(text) : started.held.push(text)) : undefined,
    });
    started.result.catch(() => undefined); // met by the handler if it adopts the speculation
    return { key, started, abandon: this.abandoner(key, model, ac) };
  }

  /**
   * The generation of an admitted request: the speculation's if it guessed this model for this organization
   * (its held text goes to `req.onToken` now, the rest as it comes), else a new one, the speculation
   * abandoned. `req.signal` cancels it, and so does the speculation's `abandon` (the route layer calls it if
   * the commit fails after this). Either way the model is this credential's guess for next time.
   */
  generate(
    spec: Speculation,
    req: GenerateRequest & { signal: AbortSignal },
  ): { result: Promise<GenerateResult>; startedAt: number; early: boolean } {
    const s = spec.started;
    const same =
      s && s.orgId === req.orgId && s.model.id === req.model.id && s.model.sha256 === req.model.sha256;
    if (!same) spec.abandon();
    this.last.delete(spec.key); // set anew: the map's order is the order of last use
    if (this.last.size >= this.max) this.last.delete(this.last.keys().next().value as string);
    this.last.set(spec.key, req.model);
    if (same) {
      follow(req.signal, s.ac);
      const sink = req.onToken;
      if (sink) {
        for (const text of s.held.splice(0)) sink(text);
        s.sink = sink;
      }
      return { result: s.result, startedAt: s.startedAt, early: true };
    }
    const runtime = this.runtime();
    if (!runtime) throw AppError.unavailable("The AI runtime is not running on this process.");
    const ac = new AbortController();
    follow(req.signal, ac);
    spec.abandon = this.abandoner(spec.key, req.model, ac);
    const result = runtime.generate({ ...req, signal: ac.signal });
    result.catch(() => undefined); // met by the caller, which may await it only after the commit
    return { result, startedAt: performance.now(), early: false };
  }

  /** Cancels a generation and drops the credential's guess (unless a later request has set another). */
  private abandoner(key: string, model: ModelRow, ac: AbortController): () => void {
    return () => {
      ac.abort();
      if (this.last.get(key) === model) this.last.delete(key);
    };
  }
}

/** Aborts `ac` when `signal` aborts (at once if it has). */
function follow(signal: AbortSignal, ac: AbortController): void {
  if (signal.aborted) ac.abort();
  else signal.addEventListener("abort", () => ac.abort(), { once: true });
}

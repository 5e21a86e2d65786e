/**
 * Every error the library raises on purpose is a ProlearnError: it carries a stable `code`,
 * where it happened (file, row, key path) and a hint for the user. The CLI owns the mapping
 * from error kind to exit code; library code never calls process.exit.
 */
export interface ErrorLocation {
  file?: string;
  line?: number;
  row?: number | string;
  keyPath?: string;
}

export abstract class ProlearnError extends Error {
  abstract readonly code: string;
  /** Exit code the CLI uses when this error ends a command. */
  abstract readonly exitCode: 1 | 2;
  readonly location: ErrorLocation;
  readonly hint?: string;

  constructor(message: string, options: { location?: ErrorLocation; hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.location = options.location ?? {};
    this.hint = options.hint;
  }

  /** One human line: "file:line: message (hint)". */
  format(): string {
    return this.formatMessage(this.message);
  }

  protected formatMessage(message: string): string {
    const { file, line, row, keyPath } = this.location;
    const where = [file, line !== undefined ? `line ${line}` : undefined, row !== undefined ? `row ${row}` : undefined, keyPath ? `key ${keyPath}` : undefined]
      .filter(Boolean)
      .join(", ");
    return `${where ? `${where}: ` : ""}${message}${this.hint ? `\n  hint: ${this.hint}` : ""}`;
  }
}

/** Bad command-line usage (unknown flag, missing argument). Exit 2. */
export class UsageError extends ProlearnError {
  readonly code = "usage";
  readonly exitCode = 2 as const;
}

export interface SpecIssue {
  message: string;
  keyPath: string;
  line?: number;
  hint?: string;
}

/** An invalid pipeline file or object; carries every problem found, not just the first. Exit 2. */
export class PipelineSpecError extends ProlearnError {
  readonly code = "invalid-pipeline";
  readonly exitCode = 2 as const;
  static readonly MAX_SHOWN = 50;
  readonly issues: SpecIssue[];
  constructor(file: string | undefined, issues: SpecIssue[]) {
    super(`invalid pipeline${file ? ` ${file}` : ""}: ${issues.length} problem${issues.length === 1 ? "" : "s"}`, { location: { file } });
    this.issues = issues;
  }
  override format(): string {
    const file = this.location.file ?? "<pipeline>";
    // A file with thousands of problems (a generated or damaged one) names the first ones.
    const shown = this.issues.slice(0, PipelineSpecError.MAX_SHOWN);
    const more = this.issues.length - shown.length;
    const lines = shown.map((i) => {
      const where = `${file}${i.line !== undefined ? `:${i.line}` : ""}`;
      return `${where}: ${i.keyPath ? `${i.keyPath}: ` : ""}${i.message}${i.hint ? ` (${i.hint})` : ""}`;
    });
    return [this.message, ...lines.map((l) => `  ${l}`), ...(more > 0 ? [`  ... and ${more} more`] : [])].join("\n");
  }
}

/**
 * A stage failed while running; names the stage. Every failure the engine records is one
 * (`StageError.of`): an error a stage raised of another kind (a DataError naming a file and row)
 * keeps its location, hint and exit code. Exit 1 unless the cause says otherwise.
 */
export class StageError extends ProlearnError {
  readonly code = "stage-failed";
  readonly exitCode: 1 | 2;
  readonly stage: string;
  /** The message without the "stage X failed: " prefix. */
  readonly detail: string;
  constructor(stage: string, message: string, options: { location?: ErrorLocation; hint?: string; cause?: unknown; exitCode?: 1 | 2 } = {}) {
    super(`stage ${stage} failed: ${message}`, options);
    this.stage = stage;
    this.detail = message;
    this.exitCode = options.exitCode ?? 1;
  }

  /** The failure of `stage` that `error` stands for: `error` itself when it already names that stage. */
  static of(stage: string, error: unknown): StageError {
    if (error instanceof StageError && error.stage === stage) return error;
    if (error instanceof StageError)
      return new StageError(stage, `${error.stage}: ${error.detail}`, { location: error.location, hint: error.hint, cause: error, exitCode: error.exitCode });
    if (error instanceof ProlearnError)
      return new StageError(stage, error.message, { location: error.location, hint: error.hint, cause: error, exitCode: error.exitCode });
    return new StageError(stage, (error as Error)?.message ?? String(error), { cause: error });
  }

  /** "stage X failed: file, row N: message", so the stage comes first however the cause located itself. */
  override format(): string {
    return `stage ${this.stage} failed: ${this.formatMessage(this.detail)}`;
  }
}

/** Input data that cannot be used (bad file, malformed table) in strict mode or where no row can be kept. Exit 1. */
export class DataError extends ProlearnError {
  readonly code = "bad-data";
  readonly exitCode = 1 as const;
}

/** A model folder that is missing files or whose tensors have the wrong shapes. Exit 1. */
export class ModelError extends ProlearnError {
  readonly code = "bad-model";
  readonly exitCode = 1 as const;
}

/** An artifact whose bytes no longer match its recorded digest, or that does not exist. Exit 1. */
export class ArtifactError extends ProlearnError {
  readonly code = "bad-artifact";
  readonly exitCode = 1 as const;
}

/**
 * The workdir's catalog (catalog.sqlite) is damaged, or gone while the workdir shows it had one.
 * Exit 1; the hint names the recovery (`prolearn catalog rebuild`).
 */
export class CatalogError extends ProlearnError {
  readonly code = "damaged-catalog";
  readonly exitCode = 1 as const;
}

/** Work stopped by its abort signal (Ctrl-C, a cancelled job) before it finished; a rerun resumes or restarts it. Exit 1. */
export class InterruptedError extends ProlearnError {
  readonly code = "interrupted";
  readonly exitCode = 1 as const;
}

/** A service the command needs (Redis, a GPU backend) is missing or misconfigured. Exit 1. */
export class EnvironmentError extends ProlearnError {
  readonly code = "environment";
  readonly exitCode = 1 as const;
}

/** Levenshtein-based "did you mean" for unknown keys and names. */
export function didYouMean(input: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(input.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  if (best === undefined) return undefined;
  return bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

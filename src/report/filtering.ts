import { FILTERED_TABLE } from "../filter/tables.js";
import { withTable } from "../io/tables.js";
import type { FilteringPart, Part, ReportOptions } from "./model.js";
import { type StageOutputs, spread } from "./outputs.js";

/** The token-filtering section: how many tokens were kept, and a few reports shaded by score. */
export async function gatherFiltering(outputs: StageOutputs, opts: ReportOptions): Promise<Part<FilteringPart>> {
  const why = outputs.missing("filter");
  if (why)
    return {
      state: "absent",
      message: `${why} Token filtering shows each report's tokens shaded by their cross-attention score; without the stage there are no scores.`,
    };
  return withTable(FILTERED_TABLE, outputs.file("filter", "filtered.parquet"), async (reader) => {
    let tokens = 0;
    let keptTokens = 0;
    let threshold: number | null = null;
    for await (const { rows } of reader.slices(["kept", "threshold"])) {
      for (let i = 0; i < rows.numRows; i++) {
        for (const flag of rows.kept[i]!) {
          tokens++;
          if (flag) keptTokens++;
        }
        threshold ??= rows.threshold[i]!;
      }
    }
    const examples: FilteringPart["examples"] = [];
    for (const row of spread([...Array(reader.numRows).keys()], opts.maxTokenExamples)) {
      const one = await reader.read(["id", "tokens", "scores", "kept", "filtered_report"], { offset: row, limit: 1 });
      const scores = one.scores[0]!;
      const kept = one.kept[0]!;
      examples.push({
        id: one.id[0]!,
        filtered: one.filtered_report[0]!,
        tokens: one.tokens[0]!.map((text, i) => ({ text, score: scores[i] ?? Number.NaN, kept: kept[i] ?? false })),
      });
    }
    return { state: "ok", data: { reports: reader.numRows, tokens, keptTokens, threshold, examples } };
  });
}

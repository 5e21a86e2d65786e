/**
 * Word-level tokenisation of reports for the builtin guide route: lower-case, split on anything
 * that is not a letter or digit. "Bilateral pulmonary infection, two infected areas." ->
 * [bilateral, pulmonary, infection, two, infected, areas]. Typos stay distinct words.
 */
export function tokenizeReport(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

// Padding is id 0 (PAD_TOKEN is the vocabulary's first entry), unknown words id 1.
export const UNKNOWN_ID = 1;
export const PAD_TOKEN = "<pad>";
export const UNKNOWN_TOKEN = "<unk>";

/**
 * Vocabulary from training reports: words seen at least `minCount` times, sorted by
 * descending count then alphabetically (deterministic), after the padding and unknown entries.
 */
export function buildVocabulary(reports: Iterable<string>, options: { minCount?: number; maxSize?: number } = {}): string[] {
  const counts = new Map<string, number>();
  for (const report of reports) for (const word of tokenizeReport(report)) counts.set(word, (counts.get(word) ?? 0) + 1);
  const words = [...counts]
    .filter(([, n]) => n >= (options.minCount ?? 1))
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w]) => w);
  return [PAD_TOKEN, UNKNOWN_TOKEN, ...words.slice(0, options.maxSize === undefined ? undefined : Math.max(0, options.maxSize - 2))];
}

/** Word ids padded/truncated to `length` (0 = padding) and the words actually encoded. */
export function encodeReport(text: string, vocabulary: ReadonlyMap<string, number>, length: number): { ids: Int32Array; words: string[] } {
  const words = tokenizeReport(text).slice(0, length);
  const ids = new Int32Array(length);
  words.forEach((w, i) => (ids[i] = vocabulary.get(w) ?? UNKNOWN_ID));
  return { ids, words };
}

export function vocabularyIndex(vocabulary: readonly string[]): Map<string, number> {
  return new Map(vocabulary.map((w, i) => [w, i]));
}

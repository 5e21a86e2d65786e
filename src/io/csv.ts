import { parse, type CsvError } from "csv-parse/sync";

/** One CSV record with the 1-based line of the file it starts on. */
export interface CsvRecord {
  cells: string[];
  line: number;
}

/** A record the parser could not read (e.g. a quote that is never closed), by the line it starts on. */
export interface CsvRecordError {
  line: number;
  message: string;
}

export interface DelimitedTable {
  records: CsvRecord[];
  errors: CsvRecordError[];
}

/** Delimiters tried when none is given, in order of preference on a tie. */
const CANDIDATES = [",", ";", "\t", "|"] as const;

/**
 * The header's delimiter: the first candidate that splits the header into cells one of which
 * `accept` takes (the caller's known column names), else the candidate splitting it into the
 * most cells (`,` when none splits it). Quoted delimiters in the header are not counted.
 */
export function sniffDelimiter(text: string, accept: (cells: string[]) => boolean = () => false): string {
  const start = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const end = text.slice(start).search(/\r?\n|$/) + start;
  const header = text.slice(start, end).replace(/"[^"]*"/g, (quoted) => quoted.replace(/[,;\t|]/g, ""));
  const split = CANDIDATES.map((d) => ({ d, cells: header.split(d).map((c) => c.trim().replace(/^"|"$/g, "")) }));
  const accepted = split.find((s) => s.cells.length > 1 && accept(s.cells));
  if (accepted) return accepted.d;
  return [...split].sort((a, b) => b.cells.length - a.cells.length)[0]!.cells.length > 1
    ? [...split].sort((a, b) => b.cells.length - a.cells.length)[0]!.d
    : ",";
}

/** Start offset of every line (after `\n`, so `\r\n` files work too). */
function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) if (i + 1 < text.length) starts.push(i + 1);
  return starts;
}

/**
 * RFC 4180 CSV through csv-parse: quoted fields may hold the delimiter, doubled quotes and
 * newlines; a byte-order mark is dropped; blank lines are skipped. A record csv-parse cannot
 * read (an unclosed or stray quote) becomes an error naming the line it starts on, and parsing
 * resumes on the next line, so one bad row never takes the rest of the file with it.
 */
export function readDelimited(text: string, delimiter: string): DelimitedTable {
  const records: CsvRecord[] = [];
  const errors: CsvRecordError[] = [];
  const starts = lineStarts(text);
  const blank = (line: number) => {
    const from = starts[line - 1]!;
    const to = line < starts.length ? starts[line]! : text.length;
    return /^\uFEFF?\r?\n?$/.test(text.slice(from, to));
  };
  let first = 1;
  while (first <= starts.length) {
    // Line where the record being read started: the first non-blank line after the last record.
    let lastEnd = first - 1;
    const nextStart = () => {
      let line = lastEnd + 1;
      while (line <= starts.length && blank(line)) line++;
      return line;
    };
    try {
      parse(text.slice(starts[first - 1]!), {
        delimiter,
        // Files edited on several systems mix line ends; each is a record end.
        record_delimiter: ["\r\n", "\n", "\r"],
        bom: first === 1,
        relax_column_count: true,
        skip_empty_lines: true,
        on_record: (record: string[], context) => {
          records.push({ cells: record, line: nextStart() });
          lastEnd = first - 1 + context.lines;
          return null;
        },
      });
      break;
    } catch (error) {
      const line = nextStart();
      if (line > starts.length) break;
      // A quote inside an unquoted field (`5" lesion`) is text, not quoting: read that one line leniently.
      const lenient = ["CSV_INVALID_OPENING_QUOTE", "INVALID_OPENING_QUOTE"].includes((error as CsvError).code)
        ? readLineLeniently(text.slice(starts[line - 1]!, line < starts.length ? starts[line]! : text.length), delimiter)
        : undefined;
      if (lenient) {
        records.push({ cells: lenient, line });
        first = line + 1;
        continue;
      }
      const message = ((error as CsvError).message ?? String(error)).replace(/ at line \d+/, "");
      errors.push({ line, message });
      first = line + 1;
    }
  }
  return { records, errors };
}

/** One physical line as a record, quotes inside unquoted fields kept as text; undefined if it is not one whole record. */
function readLineLeniently(line: string, delimiter: string): string[] | undefined {
  if (/^\s*$/.test(line) || /(^|[,;\t|])\s*"/.test(line.replace(/""/g, ""))) return undefined;
  try {
    const rows = parse(line, {
      delimiter,
      record_delimiter: ["\r\n", "\n", "\r"],
      relax_quotes: true,
      relax_column_count: true,
      skip_empty_lines: true,
    }) as string[][];
    return rows.length === 1 ? rows[0] : undefined;
  } catch {
    return undefined;
  }
}

/** The rows of a CSV file (cells only); throws on the first record that cannot be read. */
export function parseDelimited(text: string, delimiter: string): string[][] {
  const { records, errors } = readDelimited(text, delimiter);
  if (errors.length) throw new Error(`line ${errors[0]!.line}: ${errors[0]!.message}`);
  return records.map((r) => r.cells);
}

/** Like parseDelimited, sniffing the delimiter (`,`, `;`, tab or `|`) from the header line when none is given. */
export function parseCsv(text: string, delimiter?: string): string[][] {
  return parseDelimited(text, delimiter ?? sniffDelimiter(text));
}

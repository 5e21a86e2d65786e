import { defineCommand, numberOption, stringOption } from "../command.js";
import { UsageError } from "../../errors.js";
import { DATASET_KINDS, DATASET_LAYOUTS, type DatasetKind } from "../../pipeline/spec.js";
import { writeFixtureDataset, type FixtureLayout } from "../../synthetic/index.js";

const DEFAULT_LAYOUT: Record<DatasetKind, FixtureLayout> = { "qata-cov19": "sgseg", "mosmeddata-plus": "lvit", "kvasir-seg": "kvasir" };

export default defineCommand({
  name: "fixtures",
  summary: "Write a synthetic dataset in a real on-disk layout (images, masks, reports from the masks).",
  details:
    "Lesions vary in shape and are visible in the images; reports are written from the masks (lung zones for qata-cov19 and mosmeddata-plus, size and position for kvasir-seg), in the layout's own report format (xlsx, csv, json, txt).\nPrints {root, reports, ...} as JSON on stdout: use them as dataset.root and dataset.reports.",
  positionals: [{ name: "kind", description: `dataset kind: ${DATASET_KINDS.join(", ")}`, required: true }],
  options: {
    layout: {
      type: "string",
      choices: DATASET_LAYOUTS.filter((l) => l !== "auto"),
      description: `on-disk layout: ${DATASET_LAYOUTS.filter((l) => l !== "auto").join(", ")} (default: sgseg / lvit / kvasir by kind)`,
      valueName: "LAYOUT",
    },
    out: { type: "string", description: "folder to write the dataset into", valueName: "DIR" },
    n: { type: "number", description: "number of image/mask pairs", default: "24", valueName: "N" },
    seed: { type: "number", description: "random seed", default: "42", valueName: "S" },
    size: { type: "number", description: "image side in pixels", default: "64", valueName: "PX" },
    bad: { type: "boolean", description: "add one input per quarantine problem (layouts lvit, lvit-csv, guideseg, kvasir)", default: false },
    decoys: {
      type: "boolean",
      description:
        "chest kinds: also draw a decoy lesion in a lung zone the report does not name (not in the mask), so only the report tells which lesion to segment",
      default: false,
    },
  },
  async run(args, io) {
    const kind = args.positionals[0] as DatasetKind;
    if (!DATASET_KINDS.includes(kind))
      throw new UsageError(`unknown dataset kind "${args.positionals[0]}"`, { hint: `use one of ${DATASET_KINDS.join(", ")}` });
    const layout = (stringOption(args, "layout") ?? DEFAULT_LAYOUT[kind]) as FixtureLayout;
    if (!DATASET_LAYOUTS.includes(layout) || (layout as string) === "auto")
      throw new UsageError(`unknown layout "${layout}"`, { hint: `use one of ${DATASET_LAYOUTS.filter((l) => l !== "auto").join(", ")}` });
    const out = stringOption(args, "out", true);
    const result = await writeFixtureDataset({
      kind,
      layout,
      out,
      n: numberOption(args, "n"),
      seed: numberOption(args, "seed"),
      size: numberOption(args, "size"),
      bad: args.options.bad === true,
      decoys: args.options.decoys === true,
    });
    io.stderr.write(
      `wrote ${result.samples} ${kind} samples in the ${layout} layout to ${result.root} (train ${result.splits.train}, val ${result.splits.val}, test ${result.splits.test})\n`,
    );
    if (result.reports) io.stderr.write(`reports: ${result.reports} (set dataset.reports)\n`);
    io.stdout.write(JSON.stringify(result) + "\n");
  },
});

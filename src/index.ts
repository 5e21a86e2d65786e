export * from "./errors.js";
export { definePipeline, loadPipelineFile, resolvePipeline, buildPipelineSchema, type PipelineInput, type ResolvedPipeline } from "./pipeline/spec.js";
export { defineStage, type StageDefinition, type StageContext, type ProgressEvent } from "./pipeline/stage.js";
export { STAGES } from "./stages.js";
export { readParquetFile, writeParquetFile, writeParquetBatches, tableToParquet, parquetToTable } from "./io/parquet.js";
export { createEncoder, type EncoderConfig, type EncoderKind } from "./embed/factory.js";
export type { Encoder, TokenFeatures } from "./embed/encoder.js";
export { writeRunReport, ensureRunReport, gatherReport, renderReportHtml, type ReportModel, type ReportOptions } from "./report/index.js";

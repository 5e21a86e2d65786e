export { writeRunReport, ensureRunReport, runResultFromCatalog, reportPath } from "./write.js";
export { gatherReport, parseHistory, type ReportInput } from "./gather.js";
export { renderReportHtml } from "./html.js";
export { DEFAULT_REPORT_OPTIONS, type ReportModel, type ReportOptions } from "./model.js";
export { barChart, lineChart, scatterPlot } from "./svg.js";
export { fitPca2, project } from "./pca.js";
export { thumbnailDataUri } from "./thumbnails.js";

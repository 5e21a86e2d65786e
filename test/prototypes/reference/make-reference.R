# Reference HDBSCAN labels from R's dbscan package (Debian: r-cran-dbscan).
# Usage: Rscript make-reference.R points.csv minPts euclidean|cosine labels.csv
# Input: one point per row, no header. Output: one label per row, -1 = noise
# (dbscan numbers clusters from 1 and uses 0 for noise). minPts is both the minimum
# cluster size and the core-distance k (the point itself counted), i.e. our
# minClusterSize = minSamples. Cosine goes in as a precomputed dist of 1 - cos.
suppressPackageStartupMessages(library(dbscan))
args <- commandArgs(trailingOnly = TRUE)
x <- as.matrix(read.csv(args[1], header = FALSE))
min_pts <- as.integer(args[2])
metric <- args[3]
if (metric == "cosine") {
  xn <- x / sqrt(rowSums(x * x))
  m <- 1 - tcrossprod(xn)
  m[m < 0] <- 0
  d <- as.dist(m)
} else {
  d <- x
}
elapsed <- system.time(res <- hdbscan(d, minPts = min_pts))[["elapsed"]]
labels <- ifelse(res$cluster == 0L, -1L, res$cluster - 1L)
writeLines(as.character(labels), args[4])
cat(sprintf("elapsed %.3f\n", elapsed))

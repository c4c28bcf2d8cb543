# Seurat 4.3.0's own RPCA integration on the inputs written by regenerate.py.
#
#   Rscript make_seurat_rpca.R <input dir> <output dir>
#
# For every case listed in <input dir>/cases.csv (columns: name, k_weight, nn_method, irlba_tol)
# it reads <name>_input.csv.gz (rows = cells named c1..cN, column "batch" then the
# features f1..fp), splits the cells by batch (batches in sorted order, as imgprof codes them), and runs
# the RPCA workflow of the Seurat vignette with Seurat's defaults:
#   per batch: ScaleData(features = all) ; RunPCA(features = all)           (npcs = 50)
#   FindIntegrationAnchors(reduction = "rpca", anchor.features = all,
#                          dims = 1:30, k.anchor = 5, k.score = 30, nn.method)
#   IntegrateData(dims = 1:30, k.weight, sd.weight = 1)
# nn_method "annoy" is Seurat's default (approximate neighbours, Annoy with 50 trees).
# nn_method "exact" makes every neighbour search exact: nn.method = "rann" for the anchors
# and, as IntegrateData has no such option and always calls Annoy for the weights,
# Seurat's internal AnnoyNN replaced by an exact RANN::nn2 search for the run.
# irlba_tol, when not NA, is passed by RunPCA to irlba (default tol 1e-5): with the
# default, irlba's last components can differ from the exact SVD by ~1e-6, enough to
# flip a near-tied neighbour in the simulated cases.
# and writes <name>_integrated.csv.gz (cells x features, input cell order),
# <name>_anchors.csv.gz (Seurat's anchor table) and <name>_tree.csv (sample tree),
# or <name>_error.txt when Seurat stops with an error.
suppressPackageStartupMessages(library(Seurat))
args <- commandArgs(trailingOnly = TRUE)
indir <- args[1]
outdir <- args[2]
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)
cases <- read.csv(file.path(indir, "cases.csv"), stringsAsFactors = FALSE)
versions <- c(R = R.version.string, Seurat = as.character(packageVersion("Seurat")),
              SeuratObject = as.character(packageVersion("SeuratObject")),
              irlba = as.character(packageVersion("irlba")),
              RcppAnnoy = as.character(packageVersion("RcppAnnoy")),
              RANN = as.character(packageVersion("RANN")))
writeLines(paste(names(versions), versions, sep = ": "), file.path(outdir, "versions.txt"))

annoy_nn <- getFromNamespace("AnnoyNN", "Seurat")
exact_nn <- function(data, query = data, metric = "euclidean", n.trees = 50, k, search.k = -1,
                     include.distance = TRUE, index = NULL) {
  res <- RANN::nn2(data = data, query = query, k = k, eps = 0)
  list(nn.idx = res$nn.idx, nn.dists = res$nn.dists, idx = NULL,
       alg.info = list(metric = metric, ndim = ncol(x = data)))
}

run_case <- function(name, k_weight, nn_method, irlba_tol) {
  exact <- nn_method == "exact"
  assignInNamespace("AnnoyNN", if (exact) exact_nn else annoy_nn, ns = "Seurat")
  if (exact) nn_method <- "rann"
  df <- read.csv(gzfile(file.path(indir, paste0(name, "_input.csv.gz"))), row.names = 1,
                 check.names = FALSE, stringsAsFactors = FALSE)
  batch <- as.character(df$batch)
  X <- as.matrix(df[, setdiff(colnames(df), "batch")])
  features <- colnames(X)
  levels <- sort(unique(batch))
  obj.list <- lapply(levels, function(b) {
    m <- t(X[batch == b, , drop = FALSE])
    o <- CreateSeuratObject(counts = CreateAssayObject(data = m))
    o <- ScaleData(o, features = features, verbose = FALSE)
    if (is.na(irlba_tol)) {
      RunPCA(o, features = features, verbose = FALSE)
    } else {
      RunPCA(o, features = features, verbose = FALSE, tol = irlba_tol, svtol = irlba_tol)
    }
  })
  anchors <- FindIntegrationAnchors(obj.list, anchor.features = features, reduction = "rpca",
                                    nn.method = nn_method, verbose = FALSE)
  integ <- IntegrateData(anchors, k.weight = k_weight, verbose = FALSE)
  Y <- as.matrix(GetAssayData(integ, assay = "integrated", slot = "data"))[features, rownames(X)]
  out <- data.frame(cell = rownames(X), t(Y), check.names = FALSE)
  write.csv(out, gzfile(file.path(outdir, paste0(name, "_integrated.csv.gz"))), row.names = FALSE)
  write.csv(slot(anchors, "anchors"), gzfile(file.path(outdir, paste0(name, "_anchors.csv.gz"))),
            row.names = FALSE)
  tree <- slot(integ@tools$Integration, "sample.tree")
  write.csv(tree, file.path(outdir, paste0(name, "_tree.csv")), row.names = FALSE)
}

for (i in seq_len(nrow(cases))) {
  name <- cases$name[i]
  res <- tryCatch(
    withCallingHandlers(
      run_case(name, cases$k_weight[i], cases$nn_method[i], cases$irlba_tol[i]),
      warning = function(w) {
        cat(name, ": warning: ", conditionMessage(w), "\n", sep = "",
            file = file.path(outdir, paste0(name, "_warnings.txt")), append = TRUE)
        invokeRestart("muffleWarning")
      }),
    error = function(e) {
      writeLines(conditionMessage(e), file.path(outdir, paste0(name, "_error.txt")))
      NULL
    })
  cat(name, "done\n")
}

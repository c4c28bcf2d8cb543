# %% [markdown]
# # 7. The command line, end to end, on a CellProfiler SQLite
#
# `imgprof run config.toml` reads a CellProfiler output, runs the steps the config lists
# (QC, aggregation, normalisation, ...), and writes an AnnData, a metrics table and an HTML report.
# Here the input is a SQLite database with CellProfiler's per-object tables, built from the
# *ExampleHuman* measurements bundled with imgprof (what `ExportToDatabase` writes for one image).

# %%
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import pandas as pd

import imgprof as ip

work = Path(tempfile.mkdtemp())
src = ip.datasets.examplehuman_images_path()
db = work / "examplehuman.sqlite"
with sqlite3.connect(db) as con:
    for table in ("Image", "Cells", "Cytoplasm", "Nuclei"):
        name = f"{table}.csv" if table == "Image" else f"{table}.csv.gz"
        pd.read_csv(src / name).to_sql(table, con, index=False)
    print(pd.read_sql("SELECT name FROM sqlite_master WHERE type='table'", con))

# %% [markdown]
# ## The config
# One section per step, each option passed to the `ip` function of the same name; an unknown
# option is reported with its line in the file, before anything runs.

# %%
config = work / "run.toml"
config.write_text(f"""
[input]
path = "{db}"

[qc]
by = "Metadata_ImageNumber"      # one image here; normally the plate

[aggregate]
by = ["Metadata_ImageNumber"]
operation = "median"

[output]
dir = "{work / 'out'}"
format = "h5ad"
report = true
""")
print(config.read_text())

# %% [markdown]
# ## Run it
# In a terminal: `imgprof run run.toml` (here through the same Python as this notebook).

# %%
cmd = [sys.executable, "-m", "imgprof.cli", "run", str(config), "--no-progress"]
proc = subprocess.run(cmd, capture_output=True, text=True)
print(proc.stdout[-1500:])
print("exit status:", proc.returncode)

# %%
sorted(p.name for p in (work / "out").iterdir())

# %% [markdown]
# ## What came out

# %%
profiles = ad.read_h5ad(next((work / "out").glob("*.h5ad")))
profiles

# %%
ip.provenance(profiles)[["function", "shape"]]

# %% [markdown]
# A mistake in the config is caught before any work, with the line it is on:

# %%
bad = work / "bad.toml"
bad.write_text(config.read_text().replace('operation = "median"', 'opertion = "median"'))
proc = subprocess.run([sys.executable, "-m", "imgprof.cli", "run", str(bad), "--no-progress"], capture_output=True, text=True)
print((proc.stdout + proc.stderr)[-600:])

# %% [markdown]
# # 8. Saving and loading multimodal data (MuData)
#
# `ip.mm.join` pairs two modalities on a perturbation key and returns a `MuData`; it is saved
# and read back with mudata's own `write_h5mu` / `read_h5mu`, keys, metadata, the join report and
# the provenance of each modality included. Real data: the LINCS Cell Painting plate and an
# L1000 plate, matched by mechanism of action.

# %%
import tempfile
from pathlib import Path

import mudata as md
import numpy as np

import imgprof as ip

morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
mdata = ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), sep="|")
mdata

# %%
ip.mm.join_report(mdata).summary

# %% [markdown]
# ## Save

# %%
path = Path(tempfile.mkdtemp()) / "morph_expr.h5mu"
mdata.write(path)
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")

# %% [markdown]
# ## Load and check

# %%
back = md.read_h5mu(path)
back

# %%
for mod in mdata.mod:
    assert np.allclose(back[mod].X, mdata[mod].X, equal_nan=True)
    assert (back[mod].obs_names == mdata[mod].obs_names).all()
    assert list(back[mod].var_names) == list(mdata[mod].var_names)
print("modalities identical after the round trip")

# %%
ip.mm.join_report(back).summary == ip.mm.join_report(mdata).summary

# %%
ip.provenance(back["morph"])[["function", "shape"]]

# %% [markdown]
# Each modality on its own is an `AnnData` that `write_h5ad`/`read_h5ad` handle as usual, and
# `ip.concat` stacks several runs of one modality while keeping `.var` anatomy and provenance.

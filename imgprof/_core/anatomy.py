"""Parse CellProfiler feature names into their anatomy (``.var`` columns).

CellProfiler names features ``<Compartment>_<FeatureGroup>_<Feature>[_<Channel>][_<params>]``,
e.g. ``Cells_Texture_AngularSecondMoment_RNA_3_00_256`` or
``Nuclei_Correlation_Correlation_DNA_ER``. Names that do not follow that
pattern (DeepProfiler or other embeddings, proteins, genes) get
``source="embedding"`` or ``"other"`` and empty anatomy fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

#: Feature groups CellProfiler writes (the second token of a feature name).
FEATURE_GROUPS = (
    "AreaShape",
    "Intensity",
    "Texture",
    "Granularity",
    "Correlation",
    "RadialDistribution",
    "Neighbors",
    "Location",
    "Number",
    "Parent",
    "Children",
    "ObjectSkeleton",
    "Count",
    "ImageQuality",
    "Threshold",
)
#: Groups whose first token after the feature name is an image channel.
_CHANNEL_GROUPS = {"Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation", "Location", "ImageQuality"}
#: Standard Cell Painting channel names (matched case-insensitively, ``Orig`` prefix stripped).
CHANNELS = ("DNA", "RNA", "ER", "AGP", "Mito", "Brightfield", "BF", "PH3", "CellBody", "Actin", "Golgi", "Tubulin")
_XYZ = {"X", "Y", "Z"}
_EMBEDDING = re.compile(r"^(?P<prefix>[A-Za-z][A-Za-z0-9]*?)[_-]?(?P<idx>\d+)$")

ANATOMY_COLUMNS = ("source", "compartment", "feature_group", "feature", "channel", "channel2", "parameters")


def _is_number(tok: str) -> bool:
    return tok.replace(".", "", 1).isdigit()


def parse_feature_name(name: str) -> dict[str, str | None]:
    """Parse one feature name.

    Examples
    --------
    >>> parse_feature_name("Cells_Intensity_MeanIntensity_DNA")["channel"]
    'DNA'
    >>> parse_feature_name("Nuclei_Granularity_1_Mito")["parameters"]
    '1'
    """
    out: dict[str, str | None] = dict.fromkeys(ANATOMY_COLUMNS)
    tokens = name.split("_")
    if len(tokens) >= 3 and tokens[1] in FEATURE_GROUPS:
        compartment, group, rest = tokens[0], tokens[1], tokens[2:]
        out.update(source="cellprofiler", compartment=compartment, feature_group=group)
        feature, channel, channel2, params = rest[0], None, None, list(rest[1:])
        if group == "Granularity" and _is_number(rest[0]):
            feature = "Granularity"
            params = [rest[0]]
            channel = "_".join(rest[1:]) or None
        elif group == "Location":
            keep = []
            for t in rest[1:]:
                if t in _XYZ or _is_number(t):
                    keep.append(t)
                elif channel is None:
                    channel = t
                else:
                    keep.append(t)
            params = keep
        elif group == "Correlation":
            if len(rest) >= 3:
                channel, channel2, params = rest[1], rest[2], rest[3:]
            elif len(rest) == 2:
                channel, params = rest[1], []
        elif group in _CHANNEL_GROUPS and len(rest) >= 2:
            channel, params = rest[1], rest[2:]
        out.update(feature=feature, channel=channel, channel2=channel2, parameters="_".join(params) or None)
        return out
    if tokens[0] == "Metadata":
        out.update(source="metadata")
        return out
    m = _EMBEDDING.match(name)
    if m is not None:
        out.update(source="embedding", feature_group=m.group("prefix"), feature=name)
        return out
    out.update(source="other", feature=name)
    return out


def parse_feature_names(names: Sequence[str]) -> pd.DataFrame:
    """Anatomy of many feature names as a DataFrame indexed by name (the ``.var`` layout).

    Examples
    --------
    >>> df = parse_feature_names(["Cells_AreaShape_Area", "Cytoplasm_Texture_Entropy_ER_3_0"])
    >>> df.loc["Cytoplasm_Texture_Entropy_ER_3_0", ["compartment", "feature_group", "channel"]].tolist()
    ['Cytoplasm', 'Texture', 'ER']
    """
    rows = [parse_feature_name(str(n)) for n in names]
    df = pd.DataFrame(rows, index=pd.Index([str(n) for n in names]), columns=list(ANATOMY_COLUMNS))
    # Categorical, not pandas "string": anndata cannot write a nullable-string column whose values are
    # all distinct (e.g. ``feature`` of an embedding) and turns the others into categoricals on write
    # anyway, so categoricals keep the in-memory and on-disk layouts identical.
    for c in ANATOMY_COLUMNS:
        df[c] = pd.Categorical(df[c].astype(object).where(df[c].notna(), None))
    return df

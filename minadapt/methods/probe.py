"""A linear probe, the method "probe": only the classification head trains, on the frozen
backbone's [CLS] features (AdapterHub's two-layer head, heads.py; "linear" in the literature's sense
that the features are fixed). No gradient flows into the encoder at all."""
from .base import Method

PROBE = Method("probe", "the classification head alone, on the frozen backbone's [CLS] features",
               default_lr=2e-3)

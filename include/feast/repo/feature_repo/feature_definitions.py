"""Feast definitions of crossfit-mlops, built from the package's feature specs.

`feast apply` collects the module-level objects below. They are generated from
crossfit_mlops.features.specs (the single source of truth for V1 and V2), so this file never needs
editing when a feature changes. Source paths come from the project settings (CROSSFIT_STATE_DIR).
"""

from crossfit_mlops.features.feast_repo import feast_definitions

_definitions = feast_definitions()

athlete = _definitions.entity
athlete_features_v1_source = _definitions.sources["v1"]
athlete_features_v2_source = _definitions.sources["v2"]
athlete_features_v1 = _definitions.views["v1"]
athlete_features_v2 = _definitions.views["v2"]
model_v1 = _definitions.services["v1"]
model_v2 = _definitions.services["v2"]

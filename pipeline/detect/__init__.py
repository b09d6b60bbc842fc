"""Online anomaly detection per key and interval: the model contract, the baseline, the alert lifecycle.

``contract`` (what a model is), ``observe`` (a key's interval), ``baseline`` (the model the
pipeline runs), ``candidates`` (the models it was measured against), ``detection`` (keys,
alerts and health), ``lifecycle`` (an alert's life).

The models are exported here and *pickled under this package's name* (``pipeline.detect.Baseline``):
the state topic names a model class by it, so a state survives moving the class between the
package's modules (it is also the name states carried before the package was split).
"""

from pipeline.detect.baseline import DEFAULTS, Baseline, BaselineParams
from pipeline.detect.candidates import CandidateParams, GaussianCandidate, HalfSpaceCandidate, PageHinkleyCandidate

__all__ = ["DEFAULTS", "Baseline", "BaselineParams", "CandidateParams", "GaussianCandidate", "HalfSpaceCandidate",
           "PageHinkleyCandidate"]

for _cls in (Baseline, GaussianCandidate, HalfSpaceCandidate, PageHinkleyCandidate):
    _cls.__module__ = __name__
del _cls

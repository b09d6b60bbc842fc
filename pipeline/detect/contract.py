"""What ``Detection`` asks of a detector model, and what a model answers.

River's habit: a tiny contract, and one conformance suite (``tests/detect/test_contract.py``)
run on every model in ``MODELS``. A model is one object per key:

* built from its own frozen parameters, ``Model(Model.Params(...))``
  (:func:`params_from` turns a mapping of overrides into them, refusing unknown names);
* each interval, :meth:`Detector.score` judges the key's :class:`~pipeline.detect.observe.Observation`
  (one :class:`Verdict` per metric it has evidence for) and then :meth:`Detector.learn`
  is told the same observation and those verdicts: what the model learns from is its own
  business (the baseline never learns from a hot metric);
* it survives ``pickle`` (the state topic carries it): its parameters travel as a plain
  dict under ``p`` (the form the state has always had).

``Detection`` also reads a model's parameters ``z`` and ``warmup`` (for the health it sends
to attribution) and ``resolve_after`` / ``silent_after`` (alert lifecycle): every
``Params`` class has them (:class:`ModelParams`).

The metrics and their families are the wire's vocabulary (``wire.events``), re-exported here.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, slots=True)
... class P:
...     z: float = 5.0
...     warmup: int = 20
>>> params_from(P, {"warmup": 10.0})
P(z=5.0, warmup=10)
>>> params_from(P, {"zz": 1.0})
Traceback (most recent call last):
...
ValueError: unknown parameter(s) ['zz'] for P; known: ['warmup', 'z']
>>> params_from(P, {"warmup": 2.5})
Traceback (most recent call last):
...
ValueError: parameter warmup of P is an integer, not 2.5
>>> params_dict(P())
{'z': 5.0, 'warmup': 20}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, NamedTuple, Protocol, TYPE_CHECKING, TypeVar

from pipeline.wire.events import FAMILIES, FAMILY_METRICS, FAMILY_OF, METRICS, family_of

if TYPE_CHECKING:
    from pipeline.detect.observe import Observation

__all__ = ["METRICS", "FAMILIES", "FAMILY_METRICS", "FAMILY_OF", "family_of", "Verdict", "ModelParams", "Detector",
           "params_from", "params_dict"]


class Verdict(NamedTuple):  # immutable like the frozen records, ~4x cheaper to build: one per metric, key and interval
    """A model's judgement of one metric in one interval.

    ``hot``: the deviation passes the score and the absolute thresholds in this interval;
    ``flagged``: it is also confirmed — broad (not explained by one connection or a few
    flows) or hot ``confirm_after`` intervals in a row; ``streak``: hot intervals in a row
    up to this one, among those the metric was scored in; ``wide``: the evidence is spread
    over connections (not one connection's burst or one flow's spike), though it may still
    be one host's; ``single``: a hot *pair* key's deviation that one reporter or one remote
    explains (it does not stay hot with that part set aside): one host's, not the path's.
    """

    flagged: bool
    score: float
    observed: float
    expected: float
    hot: bool = False
    streak: int = 0
    wide: bool = False
    single: bool = False


class ModelParams(Protocol):
    """What ``Detection`` reads from any model's parameters."""

    @property
    def z(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def resolve_after(self) -> int: ...
    @property
    def silent_after(self) -> int: ...


P = TypeVar("P")


def params_from(cls: type[P], overrides: Mapping[str, float] | None = None) -> P:
    """``cls`` (a frozen parameter dataclass) with ``overrides`` applied; a clear error on unknown
    names, or on a non-integral value for an integer parameter (integers stay integers)."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    kw: dict[str, Any] = {}
    for name, value in (overrides or {}).items():
        if isinstance(known[name].default, int):
            if float(value) != int(value):
                raise ValueError(f"parameter {name} of {cls.__name__} is an integer, not {value}")
            value = int(value)
        else:
            value = float(value)
        kw[name] = value
    return cls(**kw)


def params_dict(params: Any) -> dict[str, Any]:
    """The parameters as a plain dict, in field order (how a model's state carries them)."""
    return {f.name: getattr(params, f.name) for f in fields(params)}


class Detector(ABC):
    """A detector model: one per key; ``score`` then ``learn`` every interval.

    Subclasses set ``Params`` (a frozen dataclass with the :class:`ModelParams` fields and
    their defaults) and keep their parameters in ``self.params``.
    """

    Params: ClassVar[type]

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def score(self, o: Observation) -> dict[str, Verdict]:
        """Judge one interval: a verdict per metric with evidence (the baseline learns nothing here;
        ``page_hinkley`` does: river's drift detector updates as it tests)."""

    @abstractmethod
    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        """Learn from the interval just scored (``verdicts`` as :meth:`score` returned them)."""

    def learned(self, metric: str) -> int | None:
        """Intervals of ``metric`` learned so far (None: the model does not count; never 'still learning')."""
        return None

    # the state topic carries a model pickled; its parameters as a plain dict 'p' (state's form since v1)
    def __getstate__(self) -> dict[str, Any]:
        return {("p" if k == "params" else k): (params_dict(v) if k == "params" else v) for k, v in vars(self).items()}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        names = {f.name for f in fields(self.Params)}
        p = state.get("p", {})
        self.__dict__.update({("params" if k == "p" else k): v for k, v in state.items()})
        # parameters a newer model has that the state lacks take their default; retired ones are dropped
        self.params = self.Params(**{k: v for k, v in p.items() if k in names})

"""The detector contract (``detect.contract``), checked on every model in ``MODELS`` (river's habit:
one conformance suite for every estimator)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import pathlib
import pickle

import orjson
import pytest

from pipeline.detect.baseline import Baseline, BaselineParams
from pipeline.detect.contract import METRICS, Detector, Verdict, params_dict, params_from
from pipeline.detect.detection import DEFAULTS, MODELS, Detection, dump_model, load_model
from pipeline.detect.observe import Observation

#: Models whose state the state topic may carry (the loader refuses what the others' pickles need:
#: they run in ``flowmon eval`` only).
STATE_MODELS = ("baseline", "gaussian")


def _normal(k: int) -> Observation:
    return Observation(10_000, k % 3, 0, 3, 12, 800.0 + k % 7, 900.0 + k % 5, rtt_samples=3)


def _spike() -> Observation:
    # loss spread over several reporters and remotes (broad evidence), and every RTT four times higher
    return Observation(10_000, 400, 0, 3, 12, 4000.0, 4500.0, 20, 0, 20, 0, rtt_samples=12, rtt_p50_rest=4000.0,
                       one_reporter=False)


def _trained(name: str, n: int = 60) -> Detector:
    cls = MODELS[name]
    m = cls(cls.Params())
    for k in range(n):
        o = _normal(k)
        m.learn(o, m.score(o))
    return m


def _roundtrip(name: str, m: Detector) -> Detector:
    """What the state topic carries (or, for eval-only models, a plain pickle)."""
    return load_model(dump_model(m)) if name in STATE_MODELS else pickle.loads(pickle.dumps(m))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_is_a_detector_with_frozen_default_params(name):
    cls = MODELS[name]
    assert issubclass(cls, Detector)
    p = cls.Params()
    for f in ("z", "warmup", "resolve_after", "silent_after"):  # what Detection reads (ModelParams)
        assert getattr(p, f) == DEFAULTS[f]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.z = 1.0  # type: ignore[misc]
    assert cls.Params() == p  # defaults untouched
    # every model's parameters carry the baseline's names and defaults
    assert {k: v for k, v in DEFAULTS.items() if k in params_dict(p)} == params_dict(p)
    with pytest.raises(TypeError):
        DEFAULTS["z"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_not_mutated_and_same_input_same_scores(name):
    """Every model: input not mutated, same input (and river seeds fixed) -> same scores."""
    cls = MODELS[name]
    a, b = cls(cls.Params()), cls(cls.Params())
    obs = [_normal(k) for k in range(40)]
    snapshot = copy.deepcopy(obs)
    for o in obs:
        va, vb = a.score(o), b.score(o)
        assert va == vb
        assert set(va) <= set(METRICS) and all(isinstance(v, Verdict) for v in va.values())
        frozen = dict(va)
        a.learn(o, va)
        b.learn(o, vb)
        assert va == frozen  # the verdicts handed back are not changed either
    assert obs == snapshot  # inputs unchanged
    with pytest.raises(AttributeError):  # immutable (NamedTuple: AttributeError; a frozen dataclass raises its subclass)
        obs[0].retrans = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_round_trips_and_scores_identically(name):
    a = _trained(name, 30)
    b = _trained(name, 30)
    c = _roundtrip(name, a)
    assert type(c) is type(a) and c.params == a.params
    for k in range(30, 60):
        o = _normal(k)
        va, vb, vc = a.score(o), b.score(o), c.score(o)
        assert va == vb == vc
        for m in (a, b, c):
            m.learn(o, m.score(o))
    assert pickle.loads(pickle.dumps(a)).score(_normal(0)) == a.score(_normal(0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_does_not_learn_what_it_flagged(name):
    """An interval's flagged metrics leave the learned baseline (a verdict's ``expected``) where it was."""
    m = _trained(name, 120)
    for _ in range(20):  # the spike lasts until the model flags it (Page-Hinkley accumulates)
        v = m.score(_spike())
        flagged = {k for k, x in v.items() if x.flagged}
        if flagged:
            break
        m.learn(_spike(), v)
    assert flagged, name
    learned, skipped = copy.deepcopy(m), copy.deepcopy(m)
    learned.learn(_spike(), v)
    after, without = learned.score(_normal(0)), skipped.score(_normal(0))
    for metric in flagged:
        assert after[metric].expected == without[metric].expected, (name, metric)


def test_baseline_does_not_learn_a_hot_interval_it_did_not_flag():
    """The baseline's contract is stronger: hot (not yet confirmed) is not learned either."""
    m = _trained("baseline", 60)
    burst = Observation(10_000, 60, 0, 3, 12, 800.0, 900.0, 58, 0, 58, 0, rtt_samples=3)  # one connection
    v = m.score(burst)
    assert v["retrans_rate"].hot and not v["retrans_rate"].flagged
    seen = dict(m.seen)
    learned = copy.deepcopy(m)
    learned.learn(burst, v)
    assert learned.seen["retrans_rate"] == seen["retrans_rate"] and learned.streak["retrans_rate"] == 1
    assert learned.score(_normal(0))["retrans_rate"].expected == m.score(_normal(0))["retrans_rate"].expected


def test_params_from_overrides():
    """The boundary from ``flowmon eval --param`` and the benchmarks: names checked, integers kept integers."""
    p = params_from(MODELS["baseline"].Params, {"confirm_after": 1.0, "z": 4})
    assert (p.confirm_after, p.z) == (1, 4.0) and isinstance(p.confirm_after, int)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['nope'\]"):
        params_from(MODELS["baseline"].Params, {"nope": 1.0})
    with pytest.raises(ValueError, match="unknown parameter"):
        Detection(params={"zz": 1.0})
    with pytest.raises(ValueError, match="integer"):
        Detection(params={"warmup": 2.5})
    with pytest.raises(ValueError, match="unknown parameter"):  # a candidate reads only its own parameters
        Detection(model="gaussian", params={"confirm_after": 1.0})
    assert Detection(model="gaussian", params={"z": 4.0}).params.z == 4.0


def test_state_refuses_foreign_pickles():
    evil = base64.b64encode(pickle.dumps(print)).decode()
    with pytest.raises(pickle.UnpicklingError):
        load_model(evil)


def test_models_are_pickled_by_the_package_name():
    """States name a model ``pipeline.detect.<Model>`` (as before the package was split), with its
    parameters as a plain dict: a state from either side of the split loads."""
    m = _trained("baseline", 5)
    raw = pickle.dumps(m, protocol=5)
    assert b"pipeline.detect\x94" in raw and b"BaselineParams" not in raw
    assert load_model(dump_model(m)).params == m.params
    # the name states got between the split and this change
    legacy = raw.replace(b"\x8c\x0fpipeline.detect\x94", b"\x8c\x19pipeline.detect.detection\x94")
    assert legacy != raw
    assert load_model(base64.b64encode(legacy).decode()).score(_normal(1)) == m.score(_normal(1))


@pytest.mark.parametrize("cut", [1, 30, 55, 80])
def test_baseline_plain_state_is_exact(cut):
    """The state topic's plain form (the statistics as JSON numbers, no pickle) restores a model that
    scores and learns exactly as the original, before and after the EW estimates settle (50
    intervals), and through a hot streak; and it is the small form (what made it worth having)."""
    a = _trained("baseline", cut)
    for o in (_spike(), _spike()):  # a streak in progress is carried too
        a.learn(o, a.score(o))
    blob = dump_model(a)
    assert isinstance(blob, dict) and blob["form"] == 4 and blob["p"] == {}  # default parameters: none written
    wire = orjson.dumps(blob)
    assert len(wire) < 450  # ~400 bytes; every parameter by name (form 3): ~1,000; river's cores pickled: 1,412
    c = load_model(orjson.loads(wire))
    assert c.__getstate__() == a.__getstate__() and c.streak == a.streak
    assert c.streak["retrans_rate"] == (2 if cut >= 20 else 0)  # hot only once warmed up
    a.s[0] = -1.0
    assert blob["s"][0] != -1.0  # a state is a snapshot: the key learning on does not change it
    a.s[0] = c.s[0]
    blob["p"]["z"] = 0.0  # nor does whoever holds the state change the model's parameters, or another key's state
    assert a.params.z == 5.0 and dump_model(a)["p"] == {}
    blob["seen"][0] = -1
    assert a.seen["retrans_rate"] == c.seen["retrans_rate"] > 0
    for k in range(cut, cut + 60):
        o = _spike() if k % 17 == 0 else _normal(k)
        va, vc = a.score(o), c.score(o)
        assert va == vc, k
        a.learn(o, va)
        c.learn(o, vc)
    assert c.__getstate__() == a.__getstate__()


#: States of earlier forms, after 1, 30 and 70 intervals of ``_normal`` with a spike every 17th: written by
#: the river-backed model before the plain form (form 2: river's Rust cores serialised; form 1: the
#: statistics pickled as objects), with what that model then scored on the 60 intervals after (flowmon at
#: 23a83c0, the last river-backed model, with this file's ``_normal`` and ``_spike``); and form 3 (every
#: parameter by name, the counts as dicts), written by flowmon at f28e26b.
_EARLIER = orjson.loads((pathlib.Path(__file__).parent / "data" / "baseline_states.json").read_bytes())


def _earlier_sequence(start: int, stop: int):
    return [_spike() if k and k % 17 == 0 else _normal(k) for k in range(start, stop)]


@pytest.mark.parametrize("form", [1, 2, 3])
@pytest.mark.parametrize("params", ["lean", "full"])
@pytest.mark.parametrize("n", [1, 30, 70])
def test_baseline_states_of_earlier_forms_load_exactly(form, params, n):
    """A state an earlier flowmon wrote loads into the plain form with every statistic exact: it scores
    the next 60 intervals as the river-backed model it was taken from did (recorded), and holds the
    numbers a model learning the same intervals now holds."""
    c = load_model(_EARLIER[f"form{form}_{params}_{n}"])
    p = BaselineParams() if params == "lean" else BaselineParams(score_p90=1, learn_dispersion=1)
    assert c.params == p
    fresh = Baseline(p)
    for o in _earlier_sequence(0, n):
        fresh.learn(o, fresh.score(o))
    assert c.__getstate__() == fresh.__getstate__()
    for o, want in zip(_earlier_sequence(n, n + 60), _EARLIER[f"next_{params}_{n}"], strict=True):
        v = c.score(o)
        assert {m: list(x)[:7] for m, x in v.items()} == want  # recorded before Verdict.single (the 8th)
        c.learn(o, v)


def test_baseline_state_with_every_statistic_still_loads_and_scores_the_same(monkeypatch):
    """States written before only the used statistics were kept carry every one (the dispersions and the
    RTT tail, never read by default): they load, score and learn as the model they were taken from."""
    from river import stats

    raw = base64.b64decode(_EARLIER["form2_lean_70"])
    captured: list[dict] = []
    with monkeypatch.context() as mp:  # the state inside the pickle, as the earlier version wrote it
        mp.setattr(Baseline, "__setstate__", lambda self, state: captured.append(state))
        pickle.loads(raw)
    state = dict(captured[0])
    fresh_ew, fresh_var = stats.EWMean(0.02)._ewmean.__getstate__(), stats.EWVar(0.02)._ewvar.__getstate__()
    state["ew"] = state["ew"] + [fresh_ew, fresh_ew]
    state["rtt"], state["rtt0"], state["m0"] = (state["rtt"] + [(fresh_ew, fresh_var)], state["rtt0"] + [(1, 0, 0.0, 0.0)],
                                                state["m0"] + [(0, 0.0)])
    c = Baseline.__new__(Baseline)
    c.__setstate__(state)
    assert "rtt_p90" in c.statistics() and len(c.s) == 22
    for o, want in zip(_earlier_sequence(70, 130), _EARLIER["next_lean_70"], strict=True):
        v = c.score(o)
        assert {m: list(x)[:7] for m, x in v.items()} == want  # recorded before Verdict.single (the 8th)
        c.learn(o, v)


def test_baseline_keeps_only_the_statistics_its_parameters_use():
    """The RTT tail's statistics only with ``score_p90``, the count dispersions only with
    ``learn_dispersion``: by default neither is ever read, and a key's memory and state are smaller."""
    lean, full = Baseline(BaselineParams()), Baseline(BaselineParams(score_p90=1, learn_dispersion=1))
    assert (len(lean.s), len(full.s)) == (14, 22)
    assert set(lean.statistics()) == {"retr", "seg", "tmo", "flw", "rtt_p50"}
    assert set(full.statistics()) == {"retr", "seg", "tmo", "flw", "disp", "rtt_p50", "rtt_p90"}
    for k in range(60):  # both learn on: nothing lacks (an IndexError here means a statistic went missing)
        for m in (lean, full):
            o = _spike() if k % 13 == 0 else _normal(k)
            m.learn(o, m.score(o))
    assert full.seen["rtt_p90"] > 20 and full.statistics()["disp"]["retrans_rate"] > 0
    assert lean.s[4:6] == [None, None]  # never learned without learn_dispersion
    assert len(orjson.dumps(dump_model(lean))) < len(orjson.dumps(dump_model(full))) - 150
    restored = load_model(orjson.loads(orjson.dumps(dump_model(full))))
    assert restored.__getstate__() == full.__getstate__()


def test_a_state_of_an_unknown_form_is_refused():
    state = dump_model(_trained("baseline", 3))
    with pytest.raises(ValueError, match="unknown model state form 5"):
        load_model({**state, "form": 5})


def test_baseline_state_carries_the_parameters_other_than_their_defaults():
    """Parameters given to a key travel with its state (and only those); one the state leaves out takes
    the loading flowmon's default, so an upgrade that changes a default applies it to restored keys too."""
    own = BaselineParams(z=4.0, score_p90=1)
    m = Baseline(own)
    for k in range(30):
        m.learn(_normal(k), m.score(_normal(k)))
    blob = orjson.loads(orjson.dumps(dump_model(m)))
    assert blob["p"] == {"z": 4.0, "score_p90": 1}
    assert load_model(blob).params == own and load_model(blob).__getstate__() == m.__getstate__()
    blob["p"] = {"score_p90": 1}  # as if z had been the default when it was written
    assert load_model(blob).params == BaselineParams(score_p90=1)
    assert "rtt_p90" in load_model(blob).statistics()


def test_form_4_counts_are_in_the_metrics_order():
    """A form-4 state lists its counts in ``STATE_METRICS`` order: adding or moving a metric needs a new form."""
    from pipeline.detect.baseline import STATE_METRICS
    from pipeline.detect.contract import METRICS

    assert tuple(METRICS) == STATE_METRICS
    m = Baseline(BaselineParams())
    m.seen, m.streak = {"retrans_rate": 1, "timeout_rate": 2, "rtt_p50": 3, "rtt_p90": 4}, dict.fromkeys(METRICS, 0)
    m.streak["rtt_p50"] = 7
    st = m.__getstate__()
    assert st["seen"] == [1, 2, 3, 4] and st["streak"] == [0, 0, 7, 0]
    back = load_model(st)
    assert back.seen == m.seen and back.streak == m.streak

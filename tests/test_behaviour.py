"""The tiny pipeline behaves as recorded: per-epoch losses and dev scores of both models, and every exported
signature's outputs on fixed sentences (tests/golden/tiny_behaviour.json, written by tests/behaviour.py on the
code before the task-folder layout; its NER dev scores and tags re-recorded when the tagger's averaged weights
became the default, its losses unchanged). A refactor must not change them.

Floats are compared to 1e-5 relative (the record was bit-identical across runs on one host; another CPU's
kernels may differ in the last bits); strings, tags and token lists must be equal. To re-record after an
intended change: `DATA_MIRROR=... python tests/behaviour.py /tmp/empty_dir > tests/golden/tiny_behaviour.json`.
"""

import json
import math

import pytest

from tests import behaviour
from tests.conftest import ROOT, needs_data

GOLDEN = ROOT / "tests" / "golden" / "tiny_behaviour.json"


def assert_same(got, want, where="record"):
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_assert_same_catches_a_changed_loss_and_a_changed_tag():
    want = {"a": [1.0, {"tag": "B-PER"}]}
    assert_same({"a": [1.000001, {"tag": "B-PER"}]}, want)
    with pytest.raises(AssertionError):
        assert_same({"a": [1.01, {"tag": "B-PER"}]}, want)
    with pytest.raises(AssertionError):
        assert_same({"a": [1.0, {"tag": "I-PER"}]}, want)


@pytest.mark.slow
@needs_data
def test_tiny_pipeline_matches_the_recorded_behaviour(tmp_path):
    assert_same(behaviour.record(tmp_path / "run"), json.loads(GOLDEN.read_text()))

"""Messages a user reads: a shape refusal says what differs; `flywheel models list` never cuts
a feature name."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.commands.models import feature_summary
from flywheel.common.errors import InvalidArgument
from flywheel.inference.oip_codec import _check_shape
from flywheel.inference.runtime import TensorSpec


def spec() -> TensorSpec:
    return TensorSpec("features", np.dtype(np.float32), (-1, 24))


@pytest.mark.parametrize(("shape", "says"), [
    ((-1, 24), "a request gives every dimension's size"),
    ((2, 5), "dimension 1 is 5, the model takes 24"),
    ((48,), "has 1 dimensions [48]; the model takes 2"),
])
def test_a_shape_refusal_says_what_differs(shape, says):
    with pytest.raises(InvalidArgument) as refused:
        _check_shape("features", shape, spec())
    assert says in refused.value.message
    assert "has shape [-1, 24]; the model takes [-1, 24]" not in refused.value.message


def test_feature_list_keeps_whole_names():
    names = [f"feature_{i:02d}" for i in range(24)]
    summary = feature_summary(names)
    shown, _, more = summary.partition(" (+")
    assert all(part in names for part in shown.split(","))
    assert more == f"{24 - len(shown.split(','))} more)"
    assert len(summary) <= 60
    assert feature_summary(["a", "b"]) == "a,b"

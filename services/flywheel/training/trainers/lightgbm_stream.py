"""LightGBM fitted on a window's rows on disk (`SpilledRows`), read a batch at a time.

The rows reach LightGBM through a `lightgbm.Sequence`: it draws its binning sample row by row
(in rising order, so one cached batch serves them) and then pushes the rows in batches into
its binned dataset. The process holds one batch of raw rows, the binning sample (at most
`bin_construct_sample_cnt` rows, 200k by default) and the binned copy, never the window.

The settings are those the scikit-learn wrapper gives the in-memory fit (`lightgbm_params`),
so both fit the same trees on the same rows.

Fine-tuning cannot go through `lgb.train(init_model=...)`: LightGBM then scores the training
rows with the champion's trees itself, and its predictor takes arrays, not a Sequence. What it
does is simple to do by hand: the champion's raw scores, computed batch by batch, become the
dataset's `init_score` (with one, LightGBM does not start the new trees from the label
average), the new trees are fitted on top, and the model is the champion's trees followed by
the new ones: the text LightGBM's own merge of the two boosters writes.
"""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np

from flywheel.training.spill import BATCH_ROWS, SpilledRows
from flywheel.training.trainers.base import (
    NativeState,
    TrainerError,
    TrainingData,
    to_float32_grid,
)
from flywheel.training.trainers.boosted import booster_model, lightgbm_params, lightgbm_parent
from flywheel.training.trainers.params import LightGBMParams

# Header keys the champion's model and the new trees must share to be one model.
_MUST_AGREE = ("num_class", "num_tree_per_iteration", "label_index", "max_feature_idx",
               "objective")
_TREE_LINE = re.compile(r"^Tree=(\d+)$", re.MULTILINE)


class SpilledSequence(lgb.Sequence):
    """Spilled rows as LightGBM reads them, on the float32 grid serving feeds (see
    `to_float32_grid`)."""

    def __init__(self, rows: SpilledRows, batch_size: int = BATCH_ROWS) -> None:
        self.rows = rows
        self.batch_size = batch_size
        self._block = -1
        self._cached = np.zeros((0, rows.shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return to_float32_grid(self.rows[key])
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} of {len(self)}")
            block, offset = divmod(index, self.batch_size)
            if block != self._block:  # the sample asks in rising order: one read per batch
                start = block * self.batch_size
                self._cached = to_float32_grid(self.rows.read(start, start + self.batch_size))
                self._block = block
            return self._cached[offset]
        return to_float32_grid(self.rows.take(np.asarray(key)))


def raw_scores(booster: lgb.Booster, rows: SpilledRows, batch_rows: int = BATCH_ROWS
               ) -> np.ndarray:
    """The booster's raw scores on the rows, batch by batch: [n], or [n, classes]."""
    parts = [booster.predict(to_float32_grid(batch), raw_score=True, num_threads=1)
             for batch in rows.batches(batch_rows)]
    return np.concatenate(parts)


def fit_streamed(params: LightGBMParams, data: TrainingData, parent: NativeState | None,
                 batch_rows: int = BATCH_ROWS):
    """A LightGBM model fitted on `data.X` as SpilledRows; with `parent`, its trees continued."""
    champion = lightgbm_parent(parent)
    init_score = None
    if champion is not None:
        init_score = raw_scores(lgb.Booster(model_str=champion), data.X, batch_rows)
    settings = lightgbm_params(data.task, data.num_classes, params.model_dump())
    y = data.y.astype(np.int64) if data.task.is_classification else data.y
    dataset = lgb.Dataset(SpilledSequence(data.X, batch_rows), label=y, init_score=init_score,
                          params=settings)
    rounds = params.fine_tune_estimators if champion is not None else params.n_estimators
    text = lgb.train(settings, dataset, num_boost_round=rounds).model_to_string()
    if champion is not None:
        text = merge_models(champion, text)
    return booster_model("lightgbm", text.encode(), data)


def _sections(text: str) -> tuple[str, str, str]:
    """Model text split into the header, the tree blocks, and what follows them."""
    first = _TREE_LINE.search(text)
    end = text.find("end of trees")
    if first is None or end < 0:
        raise TrainerError("a LightGBM model text without trees")
    return text[:first.start()], text[first.start():end], text[end:]


def _header_values(header: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in header.splitlines() if "=" in line)


def merge_models(champion: str, new: str) -> str:
    """One model text: the champion's trees, then the new trees (renumbered after them), under
    the new model's header and parameters, as LightGBM writes a continued booster."""
    head, champion_trees = _sections(champion)[:2]
    new_head, new_trees, tail = _sections(new)
    before, after = _header_values(head), _header_values(new_head)
    for key in _MUST_AGREE:
        if before.get(key) != after.get(key):
            raise TrainerError(f"the champion's LightGBM model has {key}={before.get(key)}, "
                               f"the trees fitted on it {key}={after.get(key)}")
    offset = len(_TREE_LINE.findall(champion_trees))
    renumbered = _TREE_LINE.sub(lambda m: f"Tree={int(m.group(1)) + offset}", new_trees)
    # tree_sizes (byte sizes of the blocks) is no longer true; LightGBM reads without it.
    new_head = "\n".join(line for line in new_head.split("\n")
                         if not line.startswith("tree_sizes="))
    merged = new_head + champion_trees + renumbered + tail
    # Loading and writing back recounts what covers all the trees (feature importances).
    return lgb.Booster(model_str=merged).model_to_string()

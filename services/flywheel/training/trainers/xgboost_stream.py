"""XGBoost fitted on a window's rows on disk (`SpilledRows`), read a batch at a time.

An `xgboost.DataIter` hands XGBoost the rows batch by batch (on the float32 grid serving
feeds, with their labels); `QuantileDMatrix` sketches the bins over the batches and keeps only
the binned rows, as the in-memory fit's QuantileDMatrix does over the whole array. The
settings are the in-memory fit's (`xgboost_params`: hist, the same parameters), and
fine-tuning continues the champion's booster (`xgb_model`) on the binned rows as it does there.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from flywheel.training.spill import BATCH_ROWS, SpilledRows
from flywheel.training.trainers.base import TrainingData, to_float32_grid
from flywheel.training.trainers.boosted import booster_model, xgboost_params
from flywheel.training.trainers.params import XGBoostParams


class SpilledBatches(xgb.DataIter):
    """Spilled rows and their labels (`y`, in memory) as batches for a QuantileDMatrix."""

    def __init__(self, rows: SpilledRows, y: np.ndarray, batch_rows: int = BATCH_ROWS) -> None:
        self.rows, self.y, self.batch_rows = rows, y, batch_rows
        self._start = 0
        super().__init__()

    def next(self, input_data) -> bool:
        if self._start >= len(self.rows):
            return False
        stop = self._start + self.batch_rows
        input_data(data=to_float32_grid(self.rows.read(self._start, stop)),
                   label=self.y[self._start:stop])
        self._start = stop
        return True

    def reset(self) -> None:
        self._start = 0


def fit_streamed(params: XGBoostParams, data: TrainingData, champion: xgb.Booster | None,
                 batch_rows: int = BATCH_ROWS):
    """An XGBoost model fitted on `data.X` as SpilledRows; with the champion's booster, its
    rounds continued."""
    rows = xgb.QuantileDMatrix(SpilledBatches(data.X, data.y, batch_rows), nthread=1)
    rounds = params.fine_tune_estimators if champion is not None else params.n_estimators
    booster = xgb.train(xgboost_params(data.task, data.num_classes, params.model_dump()), rows,
                        num_boost_round=rounds, xgb_model=champion)
    return booster_model("xgboost", bytes(booster.save_raw("json")), data)

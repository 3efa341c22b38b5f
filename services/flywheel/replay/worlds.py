"""The demo's synthetic worlds as labeled histories to replay: the same customers, concepts
and label noise (flywheel.demo.scenario), the rows split evenly between ``drifts + 1``
regimes. The table has the columns ``flywheel replay`` reads by default: ``entity_id``, the
24 numeric features, ``segment`` (string), ``visits`` (int64), ``label`` and ``drift`` (the
regime of the row)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa

from flywheel.demo.scenario import FEATURE_NAMES, ScenarioConfig, World


def world_table(world: str, rows: int, drifts: int, seed: int = 7,
                label_noise: float = 0.03, drift_angle_deg: float = 80.0) -> pa.Table:
    if rows <= 0 or drifts < 0 or drifts >= rows:
        raise ValueError("a history needs rows > 0 and 0 <= drifts < rows")
    config = ScenarioConfig(seed=seed, world=world, label_noise=label_noise,
                            drift_angle_deg=drift_angle_deg)
    source = World(config)
    bounds = np.linspace(0, rows, drifts + 2).round().astype(int)
    customers = []
    for regime, (start, end) in enumerate(pairwise(bounds)):
        customers.extend(source.customers(int(end - start), regime))
    features = np.stack([c.features for c in customers])
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array([f"c{c.index:07d}" for c in customers], pa.string()),
    }
    for position, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(features[:, position], pa.float64())
    columns["segment"] = pa.array([c.segment for c in customers], pa.string())
    columns["visits"] = pa.array([c.visits for c in customers], pa.int64())
    columns["label"] = pa.array([c.label for c in customers], pa.int64())
    columns["drift"] = pa.array([c.regime for c in customers], pa.int64())
    return pa.table(columns)


def write_table(table: pa.Table, path: Path) -> Path:
    """As Parquet (.parquet, .pq) or CSV (.csv), by the file's suffix."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        raise ValueError(f"{path}: write a .parquet or a .csv file")
    return path

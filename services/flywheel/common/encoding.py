"""How a feature value becomes the number a model reads: one place, for serving and training.

double, int64 and bool values are read as numbers (bool as 0 or 1). A string feature is
categorical: its value is encoded as its index in the version's vocabulary plus one, and a
value outside the vocabulary as UNKNOWN_CODE (0). Inference encodes with the vocabularies
frozen in the version it serves, and logs the codes, so the labeled examples (and the next
training run) hold exactly what the model saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

UNKNOWN_CODE = 0.0


class CategoryCodes:
    """One string feature's value -> code table."""

    __slots__ = ("_codes", "values")

    def __init__(self, values: Sequence[str]) -> None:
        self.values = tuple(values)
        self._codes = {v: float(i + 1) for i, v in enumerate(self.values)}

    def code(self, value: str) -> float:
        return self._codes.get(value, UNKNOWN_CODE)

    @property
    def cardinality(self) -> int:
        """Distinct codes, the unknown one included."""
        return len(self.values) + 1


def codes_by_column(feature_names: Sequence[str],
                    vocabularies: Mapping[str, Sequence[str]]) -> dict[int, CategoryCodes]:
    """Column index -> its code table, for the string features among `feature_names`."""
    return {i: CategoryCodes(vocabularies[name]) for i, name in enumerate(feature_names)
            if name in vocabularies}


def encode_row(values: Sequence[object], codes: Mapping[int, CategoryCodes]) -> list[float]:
    """One row of raw values (numbers, bools, strings) in model order -> the numbers the
    model reads. A string in a column without a code table raises ValueError."""
    out = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            table = codes.get(i)
            if table is None:
                raise ValueError(f"column {i} holds a string but is not categorical")
            out.append(table.code(value))
        else:
            out.append(float(value))
    return out

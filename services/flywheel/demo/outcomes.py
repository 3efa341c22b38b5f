"""What the training service did during a run: its candidates, their gates, which were
promoted and which refused. Shared by the demo and the replay; reads ListModelVersions and
GetTrainingRun, as any client of the mesh would."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc

from flywheel.demo.clients import MeshClients


async def training_outcomes(
    clients: MeshClients, model: str, started_ms: int, starting_version: int,
    served: Collection[int],
) -> dict[str, Any]:
    """Versions registered since ``started_ms`` (the starting one left out). A version counts
    as promoted when its run promoted it or it answered predictions (``served``)."""
    listing = await clients.list_versions(model)
    candidates = []
    for version in listing.versions:
        if version.version == starting_version or version.created_at_unix_ms < started_ms:
            continue
        entry: dict[str, Any] = {
            "version": version.version,
            "run_id": version.lineage.training_run_id,
            "parent_version": version.lineage.parent_version,
            "training_examples": version.lineage.training_examples,
            "aliases": list(version.aliases),
        }
        if version.lineage.training_run_id:
            try:
                run = await clients.training_run(version.lineage.training_run_id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                run = None  # a run record the service no longer holds: the version speaks
            if run is not None:
                entry.update(
                    trigger=run.trigger_reason,
                    promoted=run.promoted or version.version in served,
                    gate={"passed": run.gate.passed, "metric": run.gate.metric,
                          "candidate": round(run.gate.candidate, 4),
                          "champion": round(run.gate.champion, 4),
                          "holdout": run.gate.holdout_size, "decision": run.gate.decision},
                )
        entry.setdefault("promoted", version.version in served)
        candidates.append(entry)
    promoted = [c for c in candidates if c["promoted"]]
    worse = [c["version"] for c in promoted
             if "gate" in c and _worse(c["gate"])]
    return {
        "candidates": candidates,
        "promoted": sorted(c["version"] for c in promoted),
        "refused": sorted(c["version"] for c in candidates if not c["promoted"]),
        "worse_promotions": worse,
        "champion": dict(listing.aliases).get("champion", 0),
    }


def _worse(gate: dict[str, Any]) -> bool:
    """The candidate scored worse than the champion on the gate's holdout (an error metric,
    mae or rmse, is better lower)."""
    if gate["metric"] in ("mae", "rmse", "log_loss"):
        return gate["candidate"] > gate["champion"]
    return gate["candidate"] < gate["champion"]

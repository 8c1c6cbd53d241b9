r"""Scene bookkeeping: undo every node a block added (helper nodes, or outputs of a failed step)."""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["node_ids", "temporary_nodes", "rollback_on_error"]


def node_ids(scene) -> list[str]:
    """IDs of every node in the scene, in scene order."""
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def _remove_added(scene, before: set) -> None:
    for node_id in reversed(node_ids(scene)):
        if node_id not in before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


@contextlib.contextmanager
def temporary_nodes(scene) -> Iterator[None]:
    """Remove every node added to ``scene`` inside the block, whatever happens (exports, imports)."""
    before = set(node_ids(scene))
    try:
        yield
    finally:
        _remove_added(scene, before)


@contextlib.contextmanager
def rollback_on_error(scene) -> Iterator[None]:
    """Remove every node added inside the block if it raises (a failed publish leaves the scene as it was)."""
    before = set(node_ids(scene))
    try:
        yield
    except BaseException:
        _remove_added(scene, before)
        raise

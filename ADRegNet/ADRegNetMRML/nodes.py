r"""Scene bookkeeping: undo every node a block added (helper nodes, or outputs of a failed step), and what it
wrote into existing nodes."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

__all__ = ["node_ids", "add_hidden_node", "temporary_nodes", "rollback_on_error", "restore_on_error"]


def node_ids(scene) -> list[str]:
    """IDs of every node in the scene, in scene order."""
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def add_hidden_node(scene, class_name: str, name: str):
    """A new node of ``class_name`` added to ``scene`` hidden from editors from the start: a helper node (an
    export's reference grid or labels) never shows in node selectors, the Data module or subject hierarchy,
    not even for the moment it exists (``AddNewNodeByClass`` adds it visible)."""
    node = scene.CreateNodeByClass(class_name)
    node.UnRegister(None)  # owned by the Python variable now (CreateNodeByClass added a reference)
    node.SetHideFromEditors(1)
    node.SetName(name)
    return scene.AddNode(node)


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


@contextlib.contextmanager
def restore_on_error(nodes, reference_roles: Sequence[str] = ()) -> Iterator[None]:
    """Put back what a block overwrote in existing nodes if it raises: their content (voxels and geometry,
    transform, table), name, attributes, parent transform and their node references of ``reference_roles``
    (``CopyContent`` copies no references). ``nodes``: the user's chosen output nodes (None entries skipped);
    each is copied first, so the block may replace them freely."""
    saved = []
    for node in nodes:
        if node is None:
            continue
        copy = node.__class__()
        copy.CopyContent(node, True)
        attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames()}
        parent = node.GetTransformNodeID() if hasattr(node, "GetTransformNodeID") else None
        references = {role: [node.GetNthNodeReferenceID(role, k) for k in range(node.GetNumberOfNodeReferences(role))]
                      for role in reference_roles}
        saved.append((node, copy, node.GetName(), attributes, parent, references))
    try:
        yield
    except BaseException:
        for node, copy, name, attributes, parent, references in saved:
            node.CopyContent(copy, True)
            node.SetName(name)
            for key in list(node.GetAttributeNames()):
                node.RemoveAttribute(key)
            for key, value in attributes.items():
                node.SetAttribute(key, value)
            if hasattr(node, "SetAndObserveTransformNodeID"):
                node.SetAndObserveTransformNodeID(parent)
            for role, ids in references.items():
                node.RemoveNodeReferenceIDs(role)
                for node_id in ids:
                    node.AddNodeReferenceID(role, node_id)
        raise

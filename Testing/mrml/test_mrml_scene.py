"""The clinician's loop on the demo pair (issue 14, "Done when"), with the real engine in this process.

Register the demo lung pair through the bridge, show the moving volume registered, place landmark
pairs through the bridge's placement API on that registered display, re-run with new outputs, and
check: the landmarks reach the engine in the right frames (TRE before = the true distances), TRE
after agrees with the transform node, and no input voxel or landmark moved. ``quality="instant"``
without pre-alignment keeps the two runs short (the accuracy of the engine is the benchmark's job).
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.io import read_landmarks
from ADRegNetMRML.frames import points_lps_in_volume_frame
from ADRegNetMRML.geometry import image_from_volume_node, points_lps_to_ras, points_ras_to_lps
from ADRegNetMRML.landmarks import markups_labels, markups_node_from_points
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.pairs import PairPlacement, pair_rows
from mrml_helpers import REPO, EventLoop, click, node_ids

SAMPLE = REPO / "Resources" / "SampleData"
QUICK = dict(quality="instant", device="cpu", engineOptions={"prealignment": "none"})
BEFORE_RUN, AFTER_RUN = 4, 3  # pairs given before the first run / placed on the registered display after it


def _load(scene, name):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(SAMPLE / f"{name}.nii.gz"))
    assert storage.ReadData(node), f"could not read {name}"
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def _table(node):
    table = node.GetTable()
    rows = table.GetNumberOfRows() - 3  # mean, std, max follow the pairs
    return ([table.GetValue(r, 0).ToString() for r in range(rows)],
            np.array([[table.GetValue(r, c).ToDouble() for c in (1, 2)] for r in range(rows)]))


def test_register_place_pairs_on_the_registered_display_and_rerun(scene):
    scene.AddNewNodeByClass("vtkMRMLInteractionNode")
    scene.AddNewNodeByClass("vtkMRMLSelectionNode")
    fixed, moving = _load(scene, "lung_fixed"), _load(scene, "lung_moving")
    truth_fixed = read_landmarks(SAMPLE / "lung_fixed_landmarks.csv")
    truth_moving = read_landmarks(SAMPLE / "lung_moving_landmarks.csv")
    labels = [f"P-{k + 1}" for k in range(BEFORE_RUN)]
    fixed_list = markups_node_from_points(scene, truth_fixed[:BEFORE_RUN], "F", labels)
    moving_list = markups_node_from_points(scene, truth_moving[:BEFORE_RUN], "M", labels)
    voxels = {n.GetName(): image_from_volume_node(n, dtype=None) for n in (fixed, moving)}

    logic = ADRegNetMRMLLogic(scene)
    first = logic.registerNodes(fixed, moving, fixed_list, moving_list, **QUICK)
    first_warped = image_from_volume_node(first.warpedNode).array.copy()
    logic.setMovingUnderTransform(moving, first.transformNode, True, moving_list)

    # place pairs as a clinician does now: fixed point, then its partner on the moving volume *as displayed*
    loop = EventLoop()
    placement = PairPlacement(fixed_list, moving_list, scene.GetNodeByID("vtkMRMLInteractionNodeSingleton"),
                              scene.GetNodeByID("vtkMRMLSelectionNodeSingleton"), loop.defer,
                              moving_volume_node=moving)
    to_display = first.transformNode.GetTransformToParent()  # moving anatomy -> where the view shows it
    new = range(BEFORE_RUN, BEFORE_RUN + AFTER_RUN)
    for k in new:
        placement.start()
        assert click(scene, points_lps_to_ras(truth_fixed[k:k + 1])[0])
        loop.turn()
        shown = to_display.TransformPoint(*map(float, points_lps_to_ras(truth_moving[k:k + 1])[0]))
        assert click(scene, shown)
        loop.turn()
        assert placement.state == "done"
    count = BEFORE_RUN + AFTER_RUN
    assert markups_labels(fixed_list) == markups_labels(moving_list) == [f"P-{k + 1}" for k in range(count)]
    np.testing.assert_allclose(points_lps_in_volume_frame(moving_list, moving), truth_moving[:count], atol=0.02)

    ids = node_ids(scene)
    second = logic.registerNodes(fixed, moving, fixed_list, moving_list, **QUICK)  # outputs: create new
    assert set(ids) <= set(node_ids(scene))  # nothing removed or replaced
    names, tre = _table(second.treTableNode)
    assert names == [f"P-{k + 1}" for k in range(count)]
    # TRE before is the true distance for every pair, also those clicked on the registered display
    np.testing.assert_allclose(tre[:, 0], np.linalg.norm(truth_moving[:count] - truth_fixed[:count], axis=1),
                               atol=0.02)
    # TRE after: the transform node maps each fixed landmark where the engine says it maps
    mapping = second.transformNode.GetTransformFromParent()
    mapped = points_ras_to_lps(np.array([mapping.TransformPoint(*map(float, p))
                                         for p in points_lps_to_ras(truth_fixed[:count])]))
    np.testing.assert_allclose(tre[:, 1], np.linalg.norm(mapped - truth_moving[:count], axis=1), atol=0.02)
    rows = pair_rows(fixed_list, moving_list, fixed, moving, second.transformNode)
    np.testing.assert_allclose([[r.tre_before_mm, r.tre_after_mm] for r in rows], tre, atol=0.02)
    # instant is the network alone, which does not take the pairs: none pulled this run, none is marked
    assert not any(r.guided for r in rows)
    assert second.treTableNode.GetAttribute("ADRegNet.landmarksGuidedRegistration") == "false"
    assert second.result.metrics["tre_before"]["mean"] == pytest.approx(tre[:, 0].mean(), abs=0.02)

    # inputs unchanged: voxels, grids, landmark positions; the first run's outputs are still there, unchanged
    for node in (fixed, moving):
        now = image_from_volume_node(node, dtype=None)
        np.testing.assert_array_equal(now.array, voxels[node.GetName()].array)
        assert now.geometry.allclose(voxels[node.GetName()].geometry, atol=0)
    np.testing.assert_allclose(points_lps_in_volume_frame(fixed_list, fixed), truth_fixed[:count], atol=1e-9)
    np.testing.assert_allclose(points_lps_in_volume_frame(moving_list, moving)[:BEFORE_RUN], truth_moving[:BEFORE_RUN],
                               atol=1e-9)
    np.testing.assert_array_equal(image_from_volume_node(first.warpedNode).array, first_warped)
    assert moving.GetParentTransformNode() is first.transformNode  # the display was not changed by the run

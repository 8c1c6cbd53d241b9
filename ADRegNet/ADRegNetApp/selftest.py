"""Self-test inside Slicer (Reload and Test, ctest): registers the bundled lung pair.

It runs offline: in testing mode nothing is ever installed (ADRegNetLogic.ensureDependencies), and
without a usable PyTorch the registration part is skipped with the reason.
"""
from __future__ import annotations

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

__all__ = ["ADRegNetTest"]


def sample_data_dir() -> str:
    """Resources/SampleData, installed next to the module or in the source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "Resources", "SampleData"), os.path.join(here, "..", "Resources", "SampleData")):
        if os.path.exists(os.path.join(candidate, "lung_fixed.nii.gz")):
            return os.path.normpath(candidate)
    raise FileNotFoundError("AD-RegNet sample data (lung_fixed.nii.gz) not found next to the module")


class ADRegNetTest(ScriptedLoadableModuleTest):
    """Registers lung_moving to lung_fixed through the module's Logic."""

    def setUp(self) -> None:
        """Reset the scene."""
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        """Run all tests."""
        self.setUp()
        self.test_ADRegNet_sampleData()

    def _loadVolume(self, path: str, name: str):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(path)
        self.assertTrue(storage.ReadData(node), f"could not read {path}")
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.CreateDefaultDisplayNodes()
        return node

    def test_ADRegNet_sampleData(self) -> None:
        """Cancel leaves the scene alone; a run makes new nodes, never touches the inputs; TRE is reported."""
        from .logic import ADRegNetLogic
        from .parameters import Quality

        logic = ADRegNetLogic()
        if not logic.ensureDependencies(interactive=False):  # testing mode: never installs
            self.skipTest("PyTorch >= 2.1 is not usable here; nothing is installed in testing mode")
        from ADRegNetLib.engine import RegistrationCancelled
        from ADRegNetLib.io import read_landmarks
        from ADRegNetMRML.geometry import image_from_volume_node
        from ADRegNetMRML.landmarks import markups_node_from_points

        self.delayDisplay("Loading AD-RegNet lung sample data")
        folder = sample_data_dir()
        fixed = self._loadVolume(os.path.join(folder, "lung_fixed.nii.gz"), "lung_fixed")
        moving = self._loadVolume(os.path.join(folder, "lung_moving.nii.gz"), "lung_moving")
        p = logic.getParameterNode()
        p.fixedVolume, p.movingVolume = fixed, moving
        p.quality, p.runInChildProcess = Quality.INSTANT, False
        p.fixedLandmarks = markups_node_from_points(
            slicer.mrmlScene, read_landmarks(os.path.join(folder, "lung_fixed_landmarks.csv")), "F")
        p.movingLandmarks = markups_node_from_points(
            slicer.mrmlScene, read_landmarks(os.path.join(folder, "lung_moving_landmarks.csv")), "M")
        voxels = image_from_volume_node(moving, dtype=None).array.copy()

        self.delayDisplay("Cancel right away: the scene must not change")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(RegistrationCancelled):
            logic.process(p, shouldStop=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

        self.delayDisplay("Registering (quality: instant)")
        outputs = logic.process(p)
        self.assertIsNotNone(outputs.transformNode.GetTransformFromParent())
        self.assertEqual(outputs.jacobianNode.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
        self.assertEqual(outputs.treTableNode.GetTable().GetNumberOfRows(), 51 + 3)
        self.assertTrue((image_from_volume_node(moving, dtype=None).array == voxels).all())
        logic.showResults(p)
        self.assertIs(moving.GetParentTransformNode(), outputs.transformNode)
        self.delayDisplay("Test passed")

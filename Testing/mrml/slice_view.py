"""An offscreen Slicer slice view built from the slicer-core wheel: Slicer's own slice logic and
displayable managers (transform grid, markups) render into a VTK offscreen window (EGL on llvmpipe).

Used by the display tests (what a slice view really draws) and by scripts/render_slicer_views.py
(the README screenshots). Slicer's Qt layer (qMRMLSliceWidget, CTK's lightbox renderer manager) is
not in the wheel; the slice logic's blended image is drawn with a plain 2-D image actor instead,
which shows the same pixels.
"""
from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

__all__ = ["SliceViewer", "prepare_scene"]

DISPLAYABLE_MANAGERS = ("vtkMRMLTransformsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager")


def prepare_scene(scene):
    """Application and module logics a slice view needs (default color tables, markups logic).

    Returns:
        The vtkMRMLApplicationLogic (keep a reference while the views live).
    """
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLApplicationLogic(app)
    markups.SetMRMLScene(scene)
    app.SetModuleLogic("Markups", markups)
    app._keep = (colors, markups)  # the logics must outlive this function
    return app


class SliceViewer:
    """One slice view ("Red", "Yellow" or "Green") rendered offscreen.

    Args:
        scene: vtkMRMLScene (call :func:`prepare_scene` first).
        app: the application logic from :func:`prepare_scene`.
        name: slice view name (its composite node is created in the scene).
        size: (width, height) pixels.
    """

    def __init__(self, scene, app, name: str = "Red", size: tuple[int, int] = (400, 400)) -> None:
        self.scene, self.app, self.size = scene, app, size
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.AddRenderer(self.renderer)
        self.window.SetSize(*size)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app)
        logics = app.GetSliceLogics() or vtk.vtkCollection()
        logics.AddItem(self.logic)
        app.SetSliceLogics(logics)
        self.logic.SetMRMLScene(scene)
        self.slice_node = self.logic.AddSliceNode(name)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(app)
        for manager in DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.managers.SetMRMLDisplayableNode(self.slice_node)
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)
        self.logic.ResizeSliceNode(*size)

    @property
    def composite(self):
        """The view's vtkMRMLSliceCompositeNode (background, foreground, opacity)."""
        return self.logic.GetSliceCompositeNode()

    def show(self, orientation: str = "Axial", offset_ras: float | None = None) -> None:
        """Orient the view, fit it to the background volume and move to a slice position (mm along its normal)."""
        self.slice_node.SetOrientation(orientation)
        self.logic.FitSliceToAll()
        if offset_ras is not None:
            self.logic.SetSliceOffset(float(offset_ras))

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 screenshot, top row first."""
        # the slice logic replaces its output connection when the layers change: take the current one
        self.image_actor.GetMapper().SetInputConnection(self.logic.GetImageDataConnection())
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])

"""The landmark-pair table of the module panel: a thin Qt view of ``ADRegNetMRML.pairs``.

One row per pair: name (select it and click again, or press F2, to rename both points), TRE before
(what the views show before registration: through the moving volume's starting transform when it has
one, and the header then says "at start", as the TRE table's start_mm and metrics.json's tre_start) and
after (mm, through the last result transform; "(guided)" after a pair that pulled that registration
from where it still is: its error after is not an independent check). Double-click a row to centre the slice views on
the pair; "Delete pair" removes the selected pair from both lists, and "Restore pair" puts the pairs deleted
since these lists were chosen back, the last first, where they were. All scene work is done by ADRegNetMRML.pairs
(tested headless).
"""
from __future__ import annotations

from typing import Callable, Optional

import qt
import slicer

__all__ = ["PairTable"]

_EVENTS = ("PointAddedEvent", "PointRemovedEvent", "PointModifiedEvent", "PointPositionDefinedEvent")


def _mm(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


class PairTable:
    """Keeps a QTableWidget in step with the fixed and moving point lists.

    Args:
        table: the QTableWidget from the .ui (3 columns).
        context: returns (fixed list, moving list, fixed volume, moving volume, result transform) or None.
    """

    def __init__(self, table, context: Callable[[], Optional[tuple]]) -> None:
        self.table, self.context = table, context
        self._observed: list[tuple[object, int]] = []
        self.deleted: list = []  # ADRegNetMRML.pairs.DeletedPair, the last deleted last
        self._lists: tuple = (None, None)
        self._filling = False
        table.setColumnCount(3)
        table.setHorizontalHeaderLabels(["Pair", "TRE before (mm)", "TRE after (mm)"])
        table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        table.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        table.setEditTriggers(qt.QAbstractItemView.EditKeyPressed | qt.QAbstractItemView.SelectedClicked)
        table.connect("cellDoubleClicked(int,int)", self.jump)
        table.connect("itemChanged(QTableWidgetItem*)", self._onItemChanged)

    def observe(self, fixed_list, moving_list) -> None:
        """Follow these point lists (no-op when they did not change)."""
        if (fixed_list, moving_list) == self._lists:
            return
        for node, tag in self._observed:
            node.RemoveObserver(tag)
        self._observed = []
        self._lists = (fixed_list, moving_list)
        self.deleted = []  # deleted from other lists: nothing to restore into these
        for node in (fixed_list, moving_list):
            if node is not None:
                for event in _EVENTS:
                    self._observed.append((node, node.AddObserver(getattr(node, event), self._onListChanged)))
        self.refresh()

    def _onListChanged(self, caller=None, event=None) -> None:
        qt.QTimer.singleShot(0, self.refresh)  # after the markups node has finished its change

    def refresh(self) -> None:
        """Re-read positions, names and TRE from the scene."""
        from ADRegNetMRML.pairs import pair_rows

        context = self.context()
        rows = pair_rows(*context) if context and (context[0] or context[1]) else []
        self._filling = True
        try:
            started = any(row.tre_start_mm is not None for row in rows)
            self.table.setHorizontalHeaderLabels(["Pair", "TRE at start (mm)" if started else "TRE before (mm)",
                                                  "TRE after (mm)"])
            self.table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                name = qt.QTableWidgetItem(row.label if row.complete else f"{row.label} (unpaired)")
                self.table.setItem(r, 0, name)
                for c, value in ((1, row.tre_shown_before_mm), (2, row.tre_after_mm)):
                    guided = c == 2 and row.guided and value is not None
                    item = qt.QTableWidgetItem(_mm(value) + (" (guided)" if guided else ""))
                    item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                    if c == 1 and row.tre_start_mm is not None:
                        item.setToolTip(f"Through the moving volume's starting transform, as the views show the pair "
                                        f"before registration; {_mm(row.tre_before_mm)} mm with the volumes as stored.")
                    if guided:
                        item.setToolTip("This pair pulled the registration, so its error after is what the "
                                        "registration was asked to reach, not an independent check. Pairs placed "
                                        "afterwards (or a run with 'Landmarks only measure') check it.")
                    self.table.setItem(r, c, item)
        finally:
            self._filling = False

    def _onItemChanged(self, item) -> None:
        if self._filling or item.column() != 0:
            return
        from ADRegNetMRML.pairs import rename_pair

        context = self.context()
        with slicer.util.tryWithErrorDisplay("Cannot rename the landmark pair."):
            rename_pair(context[0], context[1], item.row(), item.text())
        self.refresh()

    def jump(self, row: int, column: int = 0) -> None:
        """Centre the slice views on a pair."""
        from ADRegNetMRML.pairs import jump_to_pair

        context = self.context()
        if context:
            jump_to_pair(slicer.mrmlScene, context[0], context[1], row)

    def deleteSelected(self) -> None:
        """Remove the selected pair from both lists."""
        from ADRegNetMRML.pairs import delete_pair

        context = self.context()
        row = self.table.currentRow()
        if context and row >= 0:
            with slicer.util.tryWithErrorDisplay("Cannot delete the landmark pair."):
                self.deleted.append(delete_pair(context[0], context[1], row))

    def restoreDeleted(self) -> None:
        """Put the last deleted pair back where it was, and select it."""
        from ADRegNetMRML.pairs import restore_pair

        context = self.context()
        if context and self.deleted:
            with slicer.util.tryWithErrorDisplay("Cannot restore the landmark pair."):
                index = restore_pair(context[0], context[1], self.deleted[-1])
                self.deleted.pop()
                self.refresh()
                self.table.selectRow(index)

r"""The pairs of a cohort: read from a PAIRS.csv, or every moving image against one atlas.

A pair names files only (absolute paths once read); nothing here opens an image, so a cohort of
thousands of pairs is listed in milliseconds and a bad image fails its own pair, not the cohort.
"""
from __future__ import annotations

import csv
import glob
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

__all__ = ["Pair", "PairsError", "read_pairs_csv", "pairs_from_atlas", "check_pairs", "REQUIRED_COLUMNS",
           "OPTIONAL_COLUMNS", "RESERVED_NAMES"]

#: columns every PAIRS.csv has
REQUIRED_COLUMNS = ("id", "fixed", "moving")
#: optional columns: landmarks (both or neither), a fixed-image mask, a moving label map to warp
#: (``labels``) and the fixed label map it is scored against with Dice (``fixed_labels``)
OPTIONAL_COLUMNS = ("fixed_landmarks", "moving_landmarks", "mask_fixed", "labels", "fixed_labels")
#: names in OUTDIR that a pair id must not take
RESERVED_NAMES = ("results.csv", "summary.png", "summary.md", ".partial")
#: longest id (UTF-8 bytes): a folder name stops at 255 bytes, and the pair is written as "<id>.<random>" first
MAX_ID_BYTES = 200
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


class PairsError(ValueError):
    """The list of pairs itself is unusable (bad CSV header, duplicate or unsafe ids)."""


@dataclass(frozen=True)
class Pair:
    """One registration of a cohort: ``moving`` onto ``fixed``, written to OUTDIR/<id>/.

    Attributes:
        id: folder name of the pair's outputs (no path separators, unique in the cohort).
        fixed, moving: image files (or DICOM folders).
        fixed_landmarks, moving_landmarks: landmark files (both or neither), pairs match by order.
        mask_fixed: region of interest on the fixed image (label map, > 0 inside).
        labels: a moving label map, warped onto the fixed grid (``warped_labels.nii.gz``).
        fixed_labels: the fixed label map that the warped ``labels`` are scored against (Dice).
    """

    id: str
    fixed: str
    moving: str
    fixed_landmarks: Optional[str] = None
    moving_landmarks: Optional[str] = None
    mask_fixed: Optional[str] = None
    labels: Optional[str] = None
    fixed_labels: Optional[str] = None

    def to_dict(self) -> dict:
        """The pair as plain strings (None for the optional files not given)."""
        return asdict(self)

    def register_arguments(self) -> list[str]:
        """The per-pair options of ``adregnet register`` (input files only)."""
        args = [self.fixed, self.moving]
        for flag, value in (("--fixed-landmarks", self.fixed_landmarks), ("--moving-landmarks", self.moving_landmarks),
                            ("--mask-fixed", self.mask_fixed), ("--warp-labels", self.labels)):
            if value:
                args += [flag, value]
        return args


def _check_id(pair_id: str, where: str) -> None:
    if not pair_id:
        raise PairsError(f"{where}: the id is empty; every pair needs an id (its output folder name)")
    bad = [c for c in pair_id if c in '/\\:*?"<>|' or ord(c) < 32]  # what some file system refuses
    if bad or pair_id in (".", "..") or pair_id.startswith(".") or pair_id != pair_id.strip():
        raise PairsError(f"{where}: id {pair_id!r} cannot be a folder name on every system (none of "
                         "/ \\ : * ? \" < > | or control characters, no leading '.' or surrounding spaces); use letters, "
                         "digits, '-' and '_'")
    if len(pair_id.encode("utf-8")) > MAX_ID_BYTES:
        raise PairsError(f"{where}: id {pair_id[:40]!r}... is {len(pair_id.encode('utf-8'))} bytes long; folder names "
                         f"stop at 255 and the batch adds a suffix while writing: use at most {MAX_ID_BYTES}")
    if pair_id.lower() in {name.lower() for name in RESERVED_NAMES}:
        raise PairsError(f"{where}: id {pair_id!r} clashes with a file the batch writes; rename the pair")


def check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """Checks ids (safe folder names, unique) and landmark columns (both or neither).

    Returns:
        the pairs as a list.

    Raises:
        PairsError: an id is unsafe or repeated, or a pair has only one landmark file.
    """
    pairs = list(pairs)
    seen: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        where = f"pair {i + 1}"
        _check_id(pair.id, where)
        key = pair.id.lower()  # folders named 'A' and 'a' are one folder on Windows and macOS
        if key in seen:
            other = pairs[seen[key]].id
            case = "" if other == pair.id else f" ({other!r}, apart from upper and lower case)"
            raise PairsError(f"{where}: id {pair.id!r} repeats pair {seen[key] + 1}{case}; ids name the output "
                             "folders and must be unique")
        seen[key] = i
        if bool(pair.fixed_landmarks) != bool(pair.moving_landmarks):
            raise PairsError(f"{where} ({pair.id}): give both fixed_landmarks and moving_landmarks, or neither")
        if pair.fixed_labels and not pair.labels:
            raise PairsError(f"{where} ({pair.id}): fixed_labels is scored against the warped moving labels; "
                             "give the moving label map in the labels column too")
    return pairs


def _resolve(value: Optional[str], base: Path) -> Optional[str]:
    if value is None or not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


_QUOTE_FIX = ('quote a cell that holds a comma ("scans/a,b.nii.gz") and close every quote on the line it '
              'opens, as a spreadsheet program saves a CSV')


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """The CSV records of ``text`` with the line each starts on.

    Raises:
        PairsError: a quote is not closed, text follows a closing quote, or a quoted cell runs over
            several lines (what an unclosed quote leads to: the rows after it become one cell).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = ("a quote opened on this line is never closed" if "end of data" in str(exc) else
                       "a quoted cell is followed by more text before the next comma (a quote opened on this line "
                       "closes on a later one?)" if "expected after" in str(exc) else f"the CSV cannot be read ({exc})")
            raise PairsError(f"{path} line {start}: {problem}; {_QUOTE_FIX}") from None
        if reader.line_num > start:
            raise PairsError(f"{path} line {start}: a quoted cell runs on to line {reader.line_num}, so those lines "
                             f"were read as one cell (a quote left open on line {start}?); {_QUOTE_FIX}")
        yield start, row


def _header(path: Path, row: list[str]) -> list[str]:
    """The checked header: lower-case column names ('' for a nameless column, e.g. a spreadsheet's trailing comma).

    Raises:
        PairsError: a required column is missing, a column is unknown or appears twice.
    """
    header = [h.strip().lower() for h in row]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        separated = [word for sep, word in ((";", "semicolons"), ("\t", "tabs")) if all(
            c in [h.strip() for h in ",".join(header).split(sep)] for c in REQUIRED_COLUMNS)]
        hint = (f" (its columns are separated by {separated[0]}, as a spreadsheet with decimal commas saves them: "
                "save it as comma-separated values)") if separated else ""
        raise PairsError(f"{path}: the header lacks {', '.join(missing)}; the first row must name the columns "
                         f"{','.join(REQUIRED_COLUMNS)} (optional: {','.join(OPTIONAL_COLUMNS)}), got {header}{hint}")
    unknown = [c for c in header if c and c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise PairsError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: "
                         f"{','.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    for name in dict.fromkeys(h for h in header if h):
        where = [i + 1 for i, h in enumerate(header) if h == name]
        if len(where) > 1:
            raise PairsError(f"{path} line 1: the column {name!r} appears {len(where)} times (columns "
                             f"{', '.join(map(str, where))}), so it is unclear which cell a pair means; keep one "
                             "column of each name")
    return header


def _check_cells(where: str, header: list[str], row: list[str]) -> None:
    """Refuses a non-empty cell that has no named column (it would be dropped without a word)."""
    for i, cell in enumerate(row):
        if not cell.strip() or (i < len(header) and header[i]):
            continue
        value = cell.strip() if len(cell.strip()) <= 60 else cell.strip()[:57] + "..."
        if i >= len(header):
            raise PairsError(f"{where}: {len(row)} cells, but the header names {len(header)} columns: cell {i + 1} "
                             f"({value!r}) belongs to no column (a path with a comma split in two?); {_QUOTE_FIX}, "
                             "or delete the extra cells")
        raise PairsError(f"{where}: cell {i + 1} ({value!r}) is under a column with no name in the header; name the "
                         f"column (one of {','.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}) or empty the cell")


def read_pairs_csv(path: str | Path) -> list[Pair]:
    """Reads a PAIRS.csv: a header row, then one pair per row.

    Columns: ``id,fixed,moving`` and optionally ``fixed_landmarks, moving_landmarks, mask_fixed,
    labels, fixed_labels``, each once. Empty cells mean "not given"; relative paths are relative to the
    CSV's folder. Nothing is dropped without a word: a filled cell beyond the header's columns (or under
    a nameless one), a repeated column and an unclosed quote are errors naming the line. Files are not
    opened here: a missing or corrupt image fails its pair when it runs.

    Returns:
        the pairs, in file order, with absolute paths.

    Raises:
        FileNotFoundError: the CSV does not exist.
        PairsError: a column is missing, unknown or repeated, a row has a filled cell without a column,
            a quote is left open, a required cell is empty, or ids are unsafe/repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist; give a CSV with the columns id,fixed,moving")
    base = path.resolve().parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PairsError(f"{path}: cannot be read as UTF-8 text (byte {exc.start}): not a CSV, or saved in another "
                         "encoding (Latin-1, UTF-16): save it as UTF-8 (CSV) and give it again") from None
    pairs = []
    header: Optional[list[str]] = None
    for lineno, row in _records(path, text):
        if header is None:
            header = _header(path, row)
            continue
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {lineno}"
        _check_cells(where, header, row)
        cells = dict(zip(header, row + [""] * (len(header) - len(row))))
        for col in REQUIRED_COLUMNS[1:]:
            if not cells[col].strip():
                raise PairsError(f"{where}: the {col} cell is empty; every pair needs a fixed and a moving image")
        _check_id(cells["id"].strip(), where)
        pairs.append(Pair(id=cells["id"].strip(),
                          **{c: _resolve(cells.get(c), base) for c in ("fixed", "moving") + OPTIONAL_COLUMNS}))
    if header is None:
        _header(path, [])  # an empty file: says which columns the header needs
    if not pairs:
        raise PairsError(f"{path} lists no pairs; add one row per pair under the header")
    return check_pairs(pairs)


def _image_id(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _moving_files(moving: str | Path) -> list[Path]:
    moving_path = Path(moving).expanduser()
    if moving_path.is_dir():
        files = sorted(p for p in moving_path.iterdir()
                       if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES[:-1]))
    else:
        files = sorted(Path(p) for p in glob.glob(str(moving_path)) if Path(p).is_file())
    return files


def pairs_from_atlas(fixed: str | Path, moving: str | Path | Iterable[str | Path],
                     mask_fixed: Optional[str | Path] = None) -> list[Pair]:
    """Every moving image registered to one fixed image (an atlas or a baseline).

    Args:
        fixed: the atlas image.
        moving: a folder (its NIfTI/NRRD/MHA files), a glob pattern, or a list of files.
        mask_fixed: optional region of interest on the atlas, used by every pair.

    Returns:
        one pair per moving image, id = the file name without its image suffix.

    Raises:
        FileNotFoundError: the atlas does not exist.
        PairsError: no moving image matched, or two files give the same id.
    """
    fixed_path = Path(fixed).expanduser()
    if not fixed_path.exists():
        raise FileNotFoundError(f"atlas {fixed_path} does not exist; give the fixed image with --atlas")
    if isinstance(moving, (str, Path)):
        files = _moving_files(moving)
        if not files:
            raise PairsError(f"no moving image matches {moving}; give a folder of .nii.gz/.nrrd/.mha files or "
                             "a quoted glob such as 'scans/*.nii.gz'")
    else:
        files = [Path(p) for p in moving]
    files = [f for f in files if f.resolve() != fixed_path.resolve()]
    mask = str(Path(mask_fixed).resolve()) if mask_fixed else None
    return check_pairs([Pair(id=_image_id(f), fixed=str(fixed_path.resolve()), moving=str(f.resolve()), mask_fixed=mask)
                        for f in files])

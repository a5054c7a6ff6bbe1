"""What a batch scores: every image file under a folder, or the ``path`` column of a manifest.

Listing is cheap and happens on the driver; files are opened only inside the job,
so a corrupt file becomes an error row instead of stopping the listing.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import DetectorError
from core.imageio import IMAGE_SUFFIXES

#: A folder listing picks up ``IMAGE_SUFFIXES`` (a corrupt file with one of them is listed, and fails as a row).
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


class BatchInputError(DetectorError):
    """The --input folder or manifest cannot be used."""

    code = "batch_input"


def list_inputs(source: str | os.PathLike) -> list[str]:
    """Paths to score, in a stable order: sorted for a folder, manifest order for a manifest."""
    src = Path(source)
    if src.is_dir():
        return _list_folder(src)
    if src.is_file():
        if src.suffix.lower() not in MANIFEST_SUFFIXES:
            raise BatchInputError(f"--input {src} is a file but not a manifest; give a folder, or a .csv or "
                                  ".parquet file with a 'path' column.")
        return _read_manifest(src)
    raise BatchInputError(f"--input {src} does not exist.")


def _list_folder(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [str(Path(root) / f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise BatchInputError(f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
    return sorted(found)


def _read_manifest(manifest: Path) -> list[str]:
    """The ``path`` column; relative paths are taken relative to the manifest's folder."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if manifest.suffix.lower() == ".csv":
            table = pacsv.read_csv(manifest, convert_options=pacsv.ConvertOptions(
                column_types={"path": "string"}, include_columns=None))
        else:
            table = pq.read_table(manifest)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with its own text
        raise BatchInputError(f"Could not read the manifest {manifest.name}: {exc}") from None
    if "path" not in table.column_names:
        raise BatchInputError(f"The manifest {manifest.name} has no 'path' column (columns: "
                              f"{', '.join(table.column_names) or 'none'}).")
    base = manifest.parent
    paths = []
    for value in table.column("path").to_pylist():
        if value is None or not str(value).strip():
            continue
        p = Path(str(value).strip())
        paths.append(str(p if p.is_absolute() else base / p))
    if not paths:
        raise BatchInputError(f"The manifest {manifest.name} lists no paths.")
    return paths

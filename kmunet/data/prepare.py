"""Dataset preparation: MSD download/unpack/verify, DRIVE verify/reorganise, DICOM -> NIfTI.

The scripts in ``data_scripts/`` are thin command-line wrappers over these functions.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

#: Official MSD archives (the Medical Segmentation Decathlon tarballs mirrored on AWS for MONAI).
MSD_BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
#: MD5 of each MSD task archive (as published with MONAI's ``DecathlonDataset``).
MSD_MD5: dict[str, str] = {
    "Task01_BrainTumour": "240a19d752f0d9e9101544901065d872",
    "Task02_Heart": "06ee59366e1e5124267b774dbd654057",
    "Task03_Liver": "a90ec6c4aa7f6a3d087205e23d4e6397",
    "Task04_Hippocampus": "9d24dba78a72977dbd1d2e110310f31b",
    "Task05_Prostate": "35138f08b1efaef89d7424d2bcc928db",
    "Task06_Lung": "8afd997733c7fc0432f71255ba4e52dc",
    "Task07_Pancreas": "4f7080cfca169fa8066d17ce6eb061e4",
    "Task08_HepaticVessel": "641d79e80ec66453921d997fbf12a29c",
    "Task09_Spleen": "410d4a301da4e5b2f6f86ec3ddba524e",
    "Task10_Colon": "bad7a188931dc2f6acf72b08eb6202d0",
}
#: Valid checksum algorithms.
HASH_ALGOS: tuple[str, ...] = ("md5", "sha256")


class ChecksumError(ValueError):
    """A downloaded or local file does not match its expected checksum."""


def file_checksum(path: str | Path, algo: str = "md5", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file.

    Raises:
        ValueError: unknown ``algo`` (lists the valid ones).
    """
    if algo not in HASH_ALGOS:
        raise ValueError(f"unknown checksum algorithm {algo!r}; valid: {list(HASH_ALGOS)}")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Check ``path`` against the given digests (none given: nothing to check).

    Raises:
        ChecksumError: a digest does not match.
    """
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_checksum(path, algo)
            if actual.lower() != expected.lower():
                raise ChecksumError(f"{path}: {algo} {actual} does not match the expected {expected}")


def download_file(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    chunk_size: int = 1 << 20,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` with HTTP range-resume and checksum verification.

    Data goes to ``dest + ".part"``; an existing partial file is resumed with a ``Range`` request
    (a server answering 200 instead of 206 restarts it). After the transfer the checksum is
    verified; on mismatch the partial file is deleted and :class:`ChecksumError` is raised. Only a
    verified file is renamed to ``dest``. An existing ``dest`` that passes the checksum is reused.

    Args:
        url: HTTP(S) URL.
        dest: destination file.
        md5: expected MD5 (hex), or ``None``.
        sha256: expected SHA-256 (hex), or ``None``.
        timeout: socket timeout in seconds.
        retries: attempts after connection errors (each resumes where the last stopped).
        chunk_size: read size in bytes.
        progress: called as ``progress(bytes_done, total_or_None)`` after each chunk.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        ChecksumError: wrong checksum.
        ValueError: ``retries`` < 1.
        OSError: the download failed ``retries`` times (the message names the URL).
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify_checksum(dest, md5, sha256)
            return dest
        except ChecksumError:
            dest.unlink()
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for _ in range(retries):
        try:
            _download_once(url, part, timeout, chunk_size, progress)
            last_error = None
            break
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code not in (408, 429, 500, 502, 503, 504):
                raise OSError(f"{url}: {err}") from err
            last_error = err
    if last_error is not None:
        kept = f"; {part.name} is kept, run again to resume" if part.exists() else ""
        raise OSError(f"{url}: download failed after {retries} attempt(s) ({last_error}){kept}") from last_error
    try:
        verify_checksum(part, md5, sha256)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return dest


def _download_once(
    url: str, part: Path, timeout: float, chunk_size: int, progress: Callable[[int, int | None], None] | None
) -> None:
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kmunet-data"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - user-given URL
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # the partial file is already complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if done and status != 206:
            done = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if done else "wb") as f:
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise ConnectionError(f"{url}: connection closed after {done} of {total} bytes")


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{archive}: unsafe path {name!r} in archive (absolute or '..')")
    return p


def safe_extract(archive: str | Path, out_dir: str | Path) -> list[Path]:
    """Extract a tar (any compression) or zip archive without path traversal.

    Every member name is checked before anything is written: absolute paths, ``..`` components,
    links and device files raise ``ValueError`` and nothing is extracted.

    Returns:
        The extracted regular files.

    Raises:
        ValueError: an unsafe member or an unsupported archive format.
        FileNotFoundError: the archive does not exist.
    """
    archive, out = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ValueError(f"{archive}: symbolic link {info.filename!r} in archive")
            for info in infos:
                target = out / _check_member_name(info.filename, archive)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(target)
        return written
    if not tarfile.is_tarfile(archive):
        raise ValueError(f"{archive}: not a tar or zip archive")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            _check_member_name(m.name, archive)
            if not (m.isfile() or m.isdir()):
                raise ValueError(f"{archive}: member {m.name!r} is a link or special file")
        for m in members:
            target = out / _check_member_name(m.name, archive)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise ValueError(f"{archive}: cannot read member {m.name!r}")
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(target)
    return written


def verify_msd(root: str | Path) -> list[str]:
    """Problems of an MSD task folder: ``dataset.json`` missing/invalid or listed files missing.

    Returns:
        One message per problem (empty list = valid).
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        return [f"{meta_path}: missing"]
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{meta_path}: invalid JSON ({err})"]
    training = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(training, list) or not training:
        return [f"{meta_path}: no 'training' list"]
    problems = []
    for i, item in enumerate(training):
        if not isinstance(item, dict):
            problems.append(f"{meta_path}: training[{i}] is not a mapping")
            continue
        for key in ("image", "label"):
            if key not in item:
                problems.append(f"{meta_path}: training[{i}] has no {key!r}")
            elif not (root / item[key]).is_file():
                problems.append(f"{root / item[key]}: listed in dataset.json but missing")
    for item in meta.get("test", []) or []:
        path = item if isinstance(item, str) else item.get("image") if isinstance(item, dict) else None
        if path and not (root / path).is_file():
            problems.append(f"{root / path}: listed in dataset.json (test) but missing")
    return problems


def _find_dir_with(root: Path, predicate: Callable[[Path], bool], max_depth: int = 3) -> Path | None:
    candidates = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for c in sorted(candidates):
            if predicate(c):
                return c
            nxt += [p for p in c.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
        candidates = nxt
    return None


def prepare_msd(
    task: str,
    out_dir: str | Path,
    archive: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download (or take a local archive of) an MSD task, unpack it safely and verify it.

    Without ``archive`` the tarball is downloaded from ``url`` (default
    ``{MSD_BASE_URL}/{task}.tar``) to ``out_dir/{task}.tar`` with resume; the checksum is ``md5`` /
    ``sha256`` if given, else the known MD5 of the task (:data:`MSD_MD5`) when the default URL is
    used. A local ``archive`` is checked only against an explicit ``md5``/``sha256``.

    Args:
        task: MSD task name such as ``"Task04_Hippocampus"``.
        out_dir: folder receiving the archive and the unpacked task folder.
        archive: local ``.tar``/``.tar.gz``/``.zip`` instead of downloading.
        url: download URL overriding the official one.
        md5: expected MD5 of the archive.
        sha256: expected SHA-256 of the archive.
        timeout: socket timeout of the download.
        progress: download progress callback ``(bytes_done, total_or_None)``.

    Returns:
        The task folder (the one holding ``dataset.json``).

    Raises:
        ValueError: unknown task without ``url``, unsafe archive, or verification problems.
        ChecksumError: the archive checksum does not match.
    """
    if not re.fullmatch(r"Task\d\d_[A-Za-z]+", task):
        raise ValueError(f"task must look like 'Task04_Hippocampus', got {task!r}; known: {sorted(MSD_MD5)}")
    if archive is None and url is None and task not in MSD_MD5:
        raise ValueError(f"unknown MSD task {task!r}; known: {sorted(MSD_MD5)} (or give its download URL or a "
                         "local archive: --url / --archive, url= / archive=)")
    from kmunet.runtime import new_folder  # here: torch (which kmunet.runtime imports) is slow to load

    out = Path(out_dir)
    with new_folder(out):  # a failed first attempt leaves no empty folder (a partial download is kept to resume)
        return _fetch_and_verify_msd(task, out, archive, url, md5, sha256, timeout, progress)


def _fetch_and_verify_msd(task: str, out: Path, archive: str | Path | None, url: str | None, md5: str | None,
                          sha256: str | None, timeout: float,
                          progress: Callable[[int, int | None], None] | None) -> Path:
    """The body of :func:`prepare_msd` once ``out`` exists."""
    if archive is None:
        if url is None:
            url = f"{MSD_BASE_URL}/{task}.tar"
            if md5 is None and sha256 is None:
                md5 = MSD_MD5[task]
        archive_path = download_file(url, out / f"{task}.tar", md5=md5, sha256=sha256, timeout=timeout, progress=progress)
    else:
        archive_path = Path(archive)
        verify_checksum(archive_path, md5, sha256)
    safe_extract(archive_path, out)
    preferred = out / task
    if (preferred / "dataset.json").is_file():
        root = preferred
    else:
        found = _find_dir_with(out, lambda p: (p / "dataset.json").is_file())
        if found is None:
            raise ValueError(f"{archive_path}: no dataset.json found after unpacking into {out}")
        root = found
    problems = verify_msd(root)
    if problems:
        raise ValueError(f"{root}: MSD verification failed:\n  " + "\n  ".join(problems[:20]))
    return root


_DRIVE_IMAGE = re.compile(r"^(\d+)_(training|test)\.(tif|tiff|png)$", re.I)


def _drive_problems(folder: Path) -> list[str]:
    problems = []
    images = sorted(p for p in (folder / "images").iterdir() if _DRIVE_IMAGE.match(p.name))
    if not images:
        return [f"{folder / 'images'}: no DRIVE images (NN_training.tif)"]
    for img in images:
        m = _DRIVE_IMAGE.match(img.name)
        assert m is not None
        case_id, part = m.group(1), m.group(2)
        manual = folder / "1st_manual" / f"{case_id}_manual1.gif"
        mask = folder / "mask" / f"{case_id}_{part}_mask.gif"
        if part.lower() == "training" and not manual.is_file():
            problems.append(f"{manual}: missing vessel annotation for {img.name}")
        if not mask.is_file():
            problems.append(f"{mask}: missing field-of-view mask for {img.name}")
    return problems


def prepare_drive(source: str | Path, out_dir: str | Path | None = None) -> Path:
    """Verify (and if needed unpack or reorganise) a DRIVE training folder.

    ``source`` may be: a folder with ``images/``, ``1st_manual/`` and ``mask/`` (or containing such
    a ``training/`` folder), a flat folder holding ``NN_training.tif``, ``NN_manual1.gif`` and
    ``NN_training_mask.gif`` files (reorganised into ``out_dir/training/{images,1st_manual,mask}``),
    or a ``.zip`` of the DRIVE release (unpacked safely into ``out_dir``).

    Returns:
        The verified folder holding ``images/``, ``1st_manual/``, ``mask/``.

    Raises:
        ValueError: missing files (every problem listed), or ``out_dir`` missing where needed.
        FileNotFoundError: ``source`` does not exist.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"DRIVE source not found: {src}")
    if src.is_file():
        if out_dir is None:
            raise ValueError("prepare_drive: out_dir is required to unpack an archive")
        safe_extract(src, out_dir)
        src = Path(out_dir)

    def is_drive(p: Path) -> bool:
        return (p / "images").is_dir() and (p / "1st_manual").is_dir()

    folder = src / "training" if is_drive(src / "training") else _find_dir_with(src, is_drive)
    if folder is None:
        flat = [p for p in src.iterdir() if p.is_file()]
        if not any(_DRIVE_IMAGE.match(p.name) for p in flat):
            raise ValueError(f"{src}: no DRIVE layout (images/, 1st_manual/, mask/) nor DRIVE files found")
        if out_dir is None:
            raise ValueError("prepare_drive: out_dir is required to reorganise a flat folder")
        folder = Path(out_dir) / "training"
        for p in flat:
            name = p.name.lower()
            if _DRIVE_IMAGE.match(p.name):
                sub = "images"
            elif name.endswith("_manual1.gif"):
                sub = "1st_manual"
            elif name.endswith("_mask.gif"):
                sub = "mask"
            else:
                continue
            (folder / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, folder / sub / p.name)
        (folder / "mask").mkdir(parents=True, exist_ok=True)
    problems = _drive_problems(folder)
    if problems:
        raise ValueError(f"{folder}: DRIVE verification failed:\n  " + "\n  ".join(problems))
    return folder


def convert_dicom_folder(src_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Convert every DICOM series under ``src_dir`` (recursively) to one NIfTI file per series.

    Series are read with SimpleITK's ``ImageSeriesReader`` (sorted by GDCM) and written as
    ``<relative folder path with '_'>[_<k>].nii.gz`` (``_<k>`` only when a folder holds several
    series); SimpleITK converts the LPS geometry to the NIfTI RAS convention.

    Returns:
        The written files, sorted.

    Raises:
        FileNotFoundError: ``src_dir`` does not exist.
        ValueError: no DICOM series found.
    """
    import SimpleITK as sitk

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {src}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for folder, _dirs, files in sorted(os.walk(src)):
        if not files:
            continue
        ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ())
        rel = Path(folder).relative_to(src)
        base = "_".join(rel.parts) if rel.parts else src.name
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)
        for k, series_id in enumerate(sorted(ids)):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id))
            image = reader.Execute()
            name = f"{base}_{k}" if len(ids) > 1 else base
            target = out / f"{name}.nii.gz"
            sitk.WriteImage(image, str(target))
            written.append(target)
    if not written:
        raise ValueError(f"{src}: no DICOM series found")
    return sorted(written)

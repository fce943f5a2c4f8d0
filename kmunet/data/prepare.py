"""Dataset preparation: MSD download/unpack/verify, DRIVE verify/reorganise, DICOM -> NIfTI.

The scripts in ``data_scripts/`` are thin command-line wrappers over these functions.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import secrets
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, NamedTuple

from kmunet.checks import first_line

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


#: Errors of the archive modules (and their decompressors) that mean the archive is damaged.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.ReadError, tarfile.CompressionError, tarfile.HeaderError, zipfile.BadZipFile, EOFError, zlib.error,
    lzma.LZMAError, gzip.BadGzipFile,
)


def _corrupt(archive: Path, err: BaseException | str) -> ValueError:
    detail = first_line(err)
    return ValueError(f"{archive}: truncated or corrupt archive ({detail})")


def safe_extract(archive: str | Path, out_dir: str | Path) -> list[Path]:
    """Extract a tar (any compression) or zip archive without path traversal.

    Every member name is checked before anything is written: absolute paths, ``..`` components,
    links and device files raise ``ValueError`` and nothing is extracted. A truncated or corrupt
    archive (including a tar cut off between two members, which ``tarfile`` itself reads as a
    shorter archive) raises ``ValueError`` and the files and folders written so far are removed
    again (folders that existed before are kept).

    Args:
        archive: the ``.tar``/``.tar.gz``/``.tar.bz2``/``.tar.xz``/``.zip`` file.
        out_dir: destination folder (created if needed).

    Returns:
        The extracted regular files.

    Raises:
        ValueError: an unsafe member, a truncated or corrupt archive (the message says
            ``truncated or corrupt``) or an unsupported archive format.
        FileNotFoundError: the archive does not exist.
    """
    archive, out = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    written: list[Path] = []
    created: list[Path] = []  # the written files that did not exist before
    with _new_folders(on_success=False) as mkdirs:
        try:
            mkdirs(out)
            _extract_members(archive, out, written, created, mkdirs)
        except BaseException as err:
            for f in reversed(created):
                f.unlink(missing_ok=True)
            if isinstance(err, _CORRUPT_ERRORS):
                raise _corrupt(archive, err) from err
            raise
    return written


@contextlib.contextmanager
def _new_folders(on_success: bool = True) -> Iterator[Callable[[Path], None]]:
    """Yield ``mkdirs(folder)`` (``folder.mkdir(parents=True, exist_ok=True)``) that records the
    folders it creates; on exit they are removed again, deepest first and only when empty (folders
    that existed before are never touched). ``on_success=False``: removed only on a failure."""
    made: list[Path] = []  # parents first

    def mkdirs(folder: Path) -> None:
        missing = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            made.append(d)

    ok = False
    try:
        yield mkdirs
        ok = True
    finally:
        if not ok or on_success:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only succeeds if empty


def _extract_members(archive: Path, out: Path, written: list[Path], created: list[Path],
                     mkdirs: Callable[[Path], None]) -> None:
    """The body of :func:`safe_extract` (``written``, ``created`` record what it writes; ``mkdirs``
    creates folders)."""
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
                    mkdirs(target)
                    continue
                mkdirs(target.parent)
                _record(target, written, created)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return
    with open(archive, "rb") as f:
        magic = f.read(4)
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip whose central directory is missing
        raise _corrupt(archive, "zip central directory not found")
    if not tarfile.is_tarfile(archive):
        if magic[:2] == b"\x1f\x8b" or magic[:3] in (b"BZh", b"\xfd7z"):
            raise _corrupt(archive, "compressed data is not a tar archive")
        raise ValueError(f"{archive}: not a tar or zip archive")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        _check_tar_end(tf, archive)
        for m in members:
            _check_member_name(m.name, archive)
            if not (m.isfile() or m.isdir()):
                raise ValueError(f"{archive}: member {m.name!r} is a link or special file")
        for m in members:
            target = out / _check_member_name(m.name, archive)
            if m.isdir():
                mkdirs(target)
                continue
            mkdirs(target.parent)
            src = tf.extractfile(m)
            if src is None:
                raise ValueError(f"{archive}: cannot read member {m.name!r}")
            _record(target, written, created)
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
                if dst.tell() != m.size:
                    raise _corrupt(archive, f"member {m.name!r} is cut short")


def _record(target: Path, written: list[Path], created: list[Path]) -> None:
    """Note that ``target`` is about to be written (and, if it does not exist yet, created)."""
    if not (target.exists() or target.is_symlink()):
        created.append(target)
    written.append(target)


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """Raise if the tar ends without its end-of-archive block (``tarfile`` reads that silently as
    a shorter archive, e.g. a download cut right after a member)."""
    # After the member scan the stream stands right behind the block read at ``tf.offset``: a full
    # (zero) block for a complete archive, fewer bytes for a cut one. No seek: going back in a
    # compressed stream would decompress it again from the start.
    fileobj = tf.fileobj
    if fileobj is None:
        return
    if fileobj.tell() - tf.offset < tarfile.BLOCKSIZE:
        raise _corrupt(archive, f"the archive ends after {tf.offset} bytes without its end-of-archive marker")


@contextlib.contextmanager
def _staging(out: Path, name: str) -> Iterator[Path]:
    """A fresh hidden folder ``out/.<name>.partial-XXXX`` for building results before publishing them.

    ``out`` is created (with its parents) if needed. The staging folder is made with the normal
    permissions (``0o777 & ~umask``, not ``mkdtemp``'s 0700), so that a folder published from it is
    readable like any other. On exit the staging folder is removed (whatever is still in it), and
    so are the folders this call created when they are empty, so a failure leaves ``out`` as it was
    (or absent).
    """
    with _new_folders() as mkdirs:
        mkdirs(out)
        while True:
            stage = out / f".{name}.partial-{secrets.token_hex(4)}"
            try:
                stage.mkdir()
                break
            except FileExistsError:
                continue
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _publish(entries: list[Path], out: Path) -> None:
    """Move the staged ``entries`` into ``out`` (same file system: renames).

    Raises:
        ValueError: an entry of that name already exists in ``out`` (nothing is moved).
    """
    for e in entries:
        _refuse_existing(out / e.name)
    for e in entries:
        e.rename(out / e.name)


def _unpacked_entries(stage: Path) -> list[Path]:
    """The top-level entries of an archive unpacked into ``stage`` that are published: everything
    but hidden folders and macOS resource forks (``__MACOSX``)."""
    return _subdirs(stage) + [p for p in sorted(stage.iterdir()) if not p.is_dir()]


def _refuse_existing(target: Path) -> None:
    """Raise ``ValueError`` naming ``target`` if it exists (results are never merged or overwritten)."""
    if target.exists() or target.is_symlink():
        raise ValueError(f"{target}: already exists (remove it, or choose another output folder)")


def _shown(messages: list[str], stage: Path, shown_as: str) -> list[str]:
    """``messages`` with the staging folder's path replaced by ``shown_as`` (paths as published)."""
    prefix = str(stage) + os.sep
    return [m.replace(prefix, shown_as) for m in messages]


def _join_problems(problems: list[str], limit: int = 8) -> str:
    """Problems on one line: ``N problem(s): a; b; ... (and K more)``."""
    more = f"; ... (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return f"{len(problems)} problem(s): " + "; ".join(problems[:limit]) + more


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


def _subdirs(p: Path) -> list[Path]:
    return sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith((".", "__MACOSX")))


def _find_dir_with(root: Path, predicate: Callable[[Path], bool], max_depth: int = 3) -> Path | None:
    candidates = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for c in sorted(candidates):
            if predicate(c):
                return c
            nxt += _subdirs(c)
        candidates = nxt
    return None


def known_msd_md5(task: str, archive: str | Path) -> str | None:
    """The known MD5 of a local MSD archive: :data:`MSD_MD5` of ``task`` when the archive has the
    official file name ``<task>.tar``, else ``None`` (no checksum known for it)."""
    return MSD_MD5.get(task) if Path(archive).name == f"{task}.tar" else None


def prepare_msd(
    task: str,
    out_dir: str | Path,
    archive: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
    verify_known_md5: bool = True,
) -> Path:
    """Download (or take a local archive of) an MSD task, unpack it safely and verify it.

    Without ``archive`` the tarball is downloaded from ``url`` (default
    ``{MSD_BASE_URL}/{task}.tar``) to ``out_dir/{task}.tar`` with resume. The checksum is ``md5`` /
    ``sha256`` if given, else the known MD5 of the task (:data:`MSD_MD5`) when the default URL is
    used or when a local ``archive`` has the official file name ``<task>.tar``
    (:func:`known_msd_md5`); ``verify_known_md5=False`` skips that known-MD5 check. A local archive
    under another name is checked only against an explicit ``md5``/``sha256``.

    The archive is unpacked into a hidden staging folder inside ``out_dir`` and verified there; only
    a verified task is moved into ``out_dir``, so a failure leaves ``out_dir`` as it was (a partial
    or complete download is kept, to resume or reuse).

    Args:
        task: MSD task name such as ``"Task04_Hippocampus"``.
        out_dir: folder receiving the archive and the unpacked task folder.
        archive: local ``.tar``/``.tar.gz``/``.zip`` instead of downloading.
        url: download URL overriding the official one.
        md5: expected MD5 of the archive.
        sha256: expected SHA-256 of the archive.
        timeout: socket timeout of the download.
        progress: download progress callback ``(bytes_done, total_or_None)``.
        verify_known_md5: check the task's known MD5 where it applies (see above).

    Returns:
        The task folder (the one holding ``dataset.json``).

    Raises:
        ValueError: unknown task without ``url``, unsafe, truncated or corrupt archive, verification
            problems, or an unpacked top-level entry that already exists in ``out_dir``.
        ChecksumError: the archive checksum does not match.
        FileNotFoundError: ``archive`` does not exist.
    """
    if not re.fullmatch(r"Task\d\d_[A-Za-z]+", task):
        raise ValueError(f"task must look like 'Task04_Hippocampus', got {task!r}; known: {sorted(MSD_MD5)}")
    if archive is None and url is None and task not in MSD_MD5:
        raise ValueError(f"unknown MSD task {task!r}; known: {sorted(MSD_MD5)} (or give its download URL or a "
                         "local archive: --url / --archive, url= / archive=)")
    if archive is not None and not Path(archive).is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    out = Path(out_dir)
    # a failed first attempt leaves no empty folder (a partial download is kept to resume)
    with _new_folders() as mkdirs:
        mkdirs(out)
        return _fetch_and_verify_msd(task, out, archive, url, md5, sha256, timeout, progress, verify_known_md5)


def _fetch_and_verify_msd(task: str, out: Path, archive: str | Path | None, url: str | None, md5: str | None,
                          sha256: str | None, timeout: float,
                          progress: Callable[[int, int | None], None] | None, verify_known_md5: bool) -> Path:
    """The body of :func:`prepare_msd` once ``out`` exists."""
    _refuse_existing(out / task)  # before downloading or unpacking anything
    known = None
    if archive is None and url is None:
        url = f"{MSD_BASE_URL}/{task}.tar"
        if md5 is None and sha256 is None and verify_known_md5:
            md5 = known = MSD_MD5[task]
    elif archive is not None and md5 is None and sha256 is None and verify_known_md5:
        md5 = known = known_msd_md5(task, archive)
    try:
        if archive is None:
            assert url is not None
            archive_path = download_file(url, out / f"{task}.tar", md5=md5, sha256=sha256, timeout=timeout,
                                         progress=progress)
        else:
            archive_path = Path(archive)
            verify_checksum(archive_path, md5, sha256)
    except ChecksumError as err:
        if known is None:
            raise
        raise ChecksumError(f"{err} (the known MD5 of the official {task}.tar; --no-verify-md5 / "
                            "verify_known_md5=False skips this check)") from err
    with _staging(out, task) as stage:
        safe_extract(archive_path, stage)
        if (stage / task / "dataset.json").is_file():
            root = stage / task
        else:
            found = _find_dir_with(stage, lambda p: (p / "dataset.json").is_file())
            if found is None:
                raise ValueError(f"{archive_path}: no dataset.json found in the archive")
            root = found
        problems = verify_msd(root)
        if problems:
            raise ValueError(f"{archive_path}: MSD verification failed (nothing unpacked into {out}), "
                             + _join_problems(_shown(problems, stage, "")))
        if root == stage:  # dataset.json at the top of the archive: the task folder is out/<task>
            target = out / task
            _refuse_existing(target)
            stage.rename(target)
            return target
        _publish(_unpacked_entries(stage), out)
        return out / root.relative_to(stage)


#: Valid values of :func:`prepare_drive`'s ``split``, with the folder names each one matches.
DRIVE_SPLITS: dict[str, tuple[str, ...]] = {"training": ("training", "train"), "test": ("test", "testing")}
_DRIVE_NAME = re.compile(r"^(\d+)_(training|test)$", re.I)


def _is_drive(p: Path) -> bool:
    """A DRIVE split folder: ``images/`` with ``1st_manual/`` and/or ``mask/``."""
    return (p / "images").is_dir() and ((p / "1st_manual").is_dir() or (p / "mask").is_dir())


def raster_files(folder: str | Path) -> list[Path]:
    """The raster image files directly in ``folder`` (sorted; hidden files skipped; empty list when
    ``folder`` is not a folder), by :data:`kmunet.data.io.RASTER_SUFFIXES`: e.g. the DRIVE images
    of ``<split>/images``."""
    from kmunet.data.io import RASTER_SUFFIXES

    folder = Path(folder)

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(RASTER_SUFFIXES))


def _drive_problems(folder: Path, split: str, flat_source: Path | None = None) -> list[str]:
    """Problems of a DRIVE split folder, pairing files exactly as the DRIVE loader does.

    Images are the raster files in ``images/``; the vessel annotation (required for the training
    split) and the field-of-view mask (always required) are the files the loader pairs with each
    (``1st_manual/NN_manual1.gif``, ``mask/<image>_mask.gif``, else the first file of that folder
    named ``NN_*``), which must be raster images (:data:`kmunet.data.io.RASTER_SUFFIXES`).

    Args:
        folder: the split folder holding ``images/``, ``1st_manual/``, ``mask/``.
        split: ``"training"`` (annotations required) or ``"test"``.
        flat_source: the flat folder ``folder`` was sorted from: problems then name its files.

    Returns:
        One message per problem (empty list = valid).
    """
    from kmunet.data.discovery import discover_drive
    from kmunet.data.io import RASTER_SUFFIXES

    if not raster_files(folder / "images"):
        return [f"{folder / 'images'}: no DRIVE images (NN_training.tif, or .png/.gif/.jpg ...)"]
    problems = []
    for case in discover_drive(folder):
        image = Path(case["image"]).name
        case_id = case["name"].split("_")[0]
        for key, sub, canonical, what, needed in (
            ("label", "1st_manual", f"{case_id}_manual1.gif", "vessel annotation", split == "training"),
            ("fov", "mask", f"{case['name']}_mask.gif", "field-of-view mask", True),
        ):
            if key not in case:
                if needed and flat_source is not None:
                    problems.append(f"{flat_source / canonical}: missing {what} for {image} "
                                    f"(any image format is accepted)")
                elif needed:
                    problems.append(f"{folder / sub / canonical}: missing {what} for {image} "
                                    f"(any {sub}/{case_id}_* image is accepted)")
            elif not case[key].lower().endswith(RASTER_SUFFIXES):
                found = (flat_source or folder / sub) / Path(case[key]).name
                problems.append(f"{found}: {what} for {image} is not an image file ({', '.join(RASTER_SUFFIXES)})")
    return problems


def _select_drive_folder(root: Path, split: str, shown: str) -> Path | None:
    """The DRIVE folder to use under ``root`` for ``split`` (``None``: no DRIVE folder at all).

    ``root`` itself when it is a DRIVE folder; else the shallowest DRIVE folder (up to 3 levels
    down) named after the split (``training``/``train`` or ``test``/``testing``); else the only
    DRIVE folder found when it is not named after the other split.

    Raises:
        ValueError: DRIVE folders exist but none is right for ``split`` (the message lists them).
    """
    if _is_drive(root):
        return root
    found: list[Path] = []
    level = _subdirs(root)
    for _ in range(3):
        nxt = []
        for c in level:
            if _is_drive(c):
                found.append(c)
            else:
                nxt += _subdirs(c)
        level = nxt
    if not found:
        return None
    wanted = [c for c in found if c.name.lower() in DRIVE_SPLITS[split]]
    if wanted:
        return min(wanted, key=lambda c: len(c.parts))
    split_names = {n for names in DRIVE_SPLITS.values() for n in names}
    unnamed = [c for c in found if c.name.lower() not in split_names]
    if len(unnamed) == 1:
        return unnamed[0]
    names = ", ".join(str(c.relative_to(root)) for c in found)
    others = [s for s in DRIVE_SPLITS if s != split and any(c.name.lower() in DRIVE_SPLITS[s] for c in found)]
    if others and not unnamed:
        hint = f"; pass --split {others[0]} (split={others[0]!r}) to use that split"
    else:
        hint = "; give the DRIVE folder to use as the source"
    raise ValueError(f"{shown}: no DRIVE {split} folder found (DRIVE folders: {names}){hint}")


def prepare_drive(source: str | Path, out_dir: str | Path | None = None, split: str = "training") -> Path:
    """Verify (and if needed unpack or reorganise) a DRIVE split folder, by default the training one.

    ``source`` may be:

    * a DRIVE folder with ``images/``, ``1st_manual/`` and ``mask/`` (verified in place; its own
      name does not matter);
    * a folder containing such folders, e.g. the release's ``DRIVE/{training,test}``: the one named
      after ``split`` is used (``training``/``train`` or ``test``/``testing``), or the only one when
      it is not named after another split; the test split is never chosen for ``"training"``;
    * a flat folder holding ``NN_<split>.tif``, ``NN_manual1.gif`` and ``NN_<split>_mask.gif``
      files (any of the loader's raster formats), copied into ``out_dir/<split>/{images,1st_manual,mask}``;
    * a ``.zip`` of the DRIVE release, unpacked safely into ``out_dir``.

    File pairing and accepted formats are those of the DRIVE loader (see :func:`_drive_problems`).
    Unpacking and reorganising happen in a hidden staging folder inside ``out_dir``; only a
    verified result is moved into ``out_dir``, so a failure leaves ``out_dir`` as it was.

    Args:
        source: DRIVE folder, folder containing DRIVE folders, flat folder, or DRIVE zip.
        out_dir: output folder, required for a zip or a flat folder.
        split: ``"training"`` (labels required) or ``"test"`` (labels optional).

    Returns:
        The verified folder holding ``images/``, ``1st_manual/``, ``mask/``.

    Raises:
        ValueError: unknown ``split``, missing files (the problems listed on one line), no folder
            for ``split``, ``out_dir`` missing where needed, an output that already exists, or a
            bad archive.
        FileNotFoundError: ``source`` does not exist.
    """
    if split not in DRIVE_SPLITS:
        raise ValueError(f"split must be one of {sorted(DRIVE_SPLITS)}, got {split!r}")
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"DRIVE source not found: {src}")
    if src.is_file():
        if out_dir is None:
            raise ValueError(f"{src}: an output folder is required to unpack an archive (--out DIR, out_dir=)")
        out = Path(out_dir)
        with _staging(out, "DRIVE") as stage:
            safe_extract(src, stage)
            folder = _select_drive_folder(stage, split, str(src))
            flat = folder is None
            if folder is None:  # a zip of a flat folder: only the sorted split is published
                folder = _reorganise_flat(stage, stage, split, str(src), move=True)
            problems = _drive_problems(folder, split)
            if problems:
                raise ValueError(f"{src}: DRIVE {split} verification failed (nothing unpacked into {out}), "
                                 + _join_problems(_shown(problems, stage, "")))
            _publish([folder] if flat else _unpacked_entries(stage), out)
            return out / folder.relative_to(stage)
    folder = _select_drive_folder(src, split, str(src))
    if folder is not None:
        problems = _drive_problems(folder, split)
        if problems:
            raise ValueError(f"{folder}: DRIVE {split} verification failed, {_join_problems(problems)}")
        return folder
    if out_dir is None:
        if _flat_drive_files(src, split):
            raise ValueError(f"{src}: is a flat folder of DRIVE files; an output folder to sort them into is "
                             "required (--out DIR, out_dir=)")
        raise _no_drive_files_error(src, split, str(src))
    out = Path(out_dir)
    with _staging(out, split) as stage:
        folder = _reorganise_flat(src, stage, split, str(src), move=False)
        problems = _drive_problems(folder, split, flat_source=src)
        if problems:
            raise ValueError(f"{src}: DRIVE {split} verification failed (nothing written to {out}), "
                             + _join_problems(problems))
        _publish([folder], out)
        return out / split


def _flat_drive_files(src: Path, split: str) -> dict[str, list[Path]]:
    """The flat DRIVE files of ``split`` in ``src``, by destination sub-folder (empty: none)."""
    from kmunet.data.io import path_stem

    stems = {p: path_stem(p) for p in raster_files(src)}
    images = [p for p, s in stems.items() if (m := _DRIVE_NAME.match(s)) and m.group(2).lower() == split]
    if not images:
        return {}
    ids = {stems[p].split("_")[0] for p in images}
    manual = [p for p, s in stems.items() if re.fullmatch(r"(\d+)_manual1", s, re.I) and s.split("_")[0] in ids]
    masks = [p for p, s in stems.items() if re.fullmatch(rf"(\d+)_{split}_mask", s, re.I) and s.split("_")[0] in ids]
    return {"images": images, "1st_manual": manual, "mask": masks}


def _no_drive_files_error(src: Path, split: str, shown: str) -> ValueError:
    """The error for a ``src`` holding neither a DRIVE folder nor flat DRIVE files of ``split``
    (naming the other split when ``src`` holds its files)."""
    other = [s for s in DRIVE_SPLITS if s != split and _flat_drive_files(src, s)]
    hint = f"; it holds DRIVE {other[0]} files: pass --split {other[0]} (split={other[0]!r})" if other else ""
    return ValueError(f"{shown}: no DRIVE layout (images/, 1st_manual/, mask/) nor DRIVE {split} files "
                      f"(NN_{split}.tif) found{hint}")


def _reorganise_flat(src: Path, dest_parent: Path, split: str, shown: str, move: bool) -> Path:
    """Copy (or move) the flat DRIVE files of ``split`` in ``src`` to ``dest_parent/<split>/...``.

    Raises:
        ValueError: ``src`` holds neither a DRIVE folder nor DRIVE files of ``split``.
    """
    groups = _flat_drive_files(src, split)
    if not groups:
        raise _no_drive_files_error(src, split, shown)
    folder = dest_parent / split
    for sub in ("images", "1st_manual", "mask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for p in groups[sub]:
            if move:
                p.rename(folder / sub / p.name)
            else:
                shutil.copy2(p, folder / sub / p.name)
    return folder


def _refuse_existing_outputs(targets: list[Path]) -> None:
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing:
        raise ValueError(f"{existing[0]}: already exists ({len(existing)} of the {len(targets)} outputs do; "
                         "use --overwrite, overwrite=True, to replace them)")


def _publish_converted(stage: Path, names: list[str], targets: list[Path], overwrite: bool) -> None:
    """Move ``stage/<name>`` to each target; all or nothing.

    Without ``overwrite`` the targets are checked again right before moving (they may have appeared
    during the conversion) and an existing one is refused, never replaced. With ``overwrite`` each
    existing target is first set aside inside ``stage``. On a failure the files this call moved are
    taken back and the set-aside ones restored.
    """
    if not overwrite:
        _refuse_existing_outputs(targets)
    aside = stage / ".replaced"
    done: list[tuple[Path, Path | None]] = []  # (target, its set-aside earlier version)
    try:
        for name, target in zip(names, targets):
            earlier = None
            if target.exists() or target.is_symlink():  # only with overwrite: refused above otherwise
                aside.mkdir(exist_ok=True)
                earlier = aside / name
                target.replace(earlier)
            done.append((target, earlier))
            (stage / name).replace(target)
    except BaseException:
        for target, earlier in reversed(done):
            with contextlib.suppress(OSError):
                if earlier is not None:
                    earlier.replace(target)
                else:
                    target.unlink(missing_ok=True)
        raise


def _itk_error_detail(err: BaseException) -> str:
    """The informative line of a SimpleITK exception (``ITK ERROR: Class(0x..): what``), without
    the source location and object address."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ITK ERROR:"):
            return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*", "", line)
    return lines[-1] if lines else type(err).__name__


class _Series(NamedTuple):
    """One DICOM series to convert and its output name (without ``.nii.gz``)."""

    folder: Path
    series_id: str
    name: str  #: the unique name it is written under
    wanted: str  #: the name before collisions were resolved


def _plan_dicom_names(src: Path) -> list[_Series]:
    """The DICOM series under ``src`` in conversion order, with unique names (see
    :func:`convert_dicom_folder` for the naming rule)."""
    import SimpleITK as sitk

    from kmunet.data.io import itk_warnings_off

    found: list[tuple[tuple[str, ...], str, Path, str]] = []
    with itk_warnings_off():
        for folder, _dirs, files in os.walk(src):
            if not files:
                continue
            ids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ())
            rel = Path(folder).relative_to(src)
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(rel.parts) if rel.parts else src.resolve().name)
            for k, series_id in enumerate(ids):
                found.append((rel.parts, series_id, Path(folder), f"{base}_{k}" if len(ids) > 1 else base))
    found.sort(key=lambda s: (s[0], s[1]))
    taken: set[str] = set()
    plan = []
    for _parts, series_id, folder, wanted in found:
        name, n = wanted, 1
        while name.casefold() in taken:
            n += 1
            name = f"{wanted}-{n}"
        taken.add(name.casefold())
        plan.append(_Series(folder, series_id, name, wanted))
    return plan


def convert_dicom_folder(src_dir: str | Path, out_dir: str | Path, overwrite: bool = False,
                         log: Callable[[str], None] | None = None) -> list[Path]:
    """Convert every DICOM series under ``src_dir`` (recursively) to one NIfTI file per series.

    Series are read with SimpleITK's ``ImageSeriesReader`` (sorted by GDCM); SimpleITK converts the
    LPS geometry to the NIfTI RAS convention. Each series is written as
    ``<relative folder path, components joined with '_'>[_<k>].nii.gz`` (characters other than
    ``A-Za-z0-9._-`` become ``_``; ``src_dir``'s own name for series directly in it; ``_<k>``,
    k = 0, 1, ... in series-UID order, only when a folder holds several series). Names that still
    collide (``p1/ax`` and ``p1_ax`` both give ``p1_ax``; names equal up to case count as equal)
    are made unique deterministically: series are taken in the order of their relative folder paths
    (compared component by component) and UIDs, the first keeps the name and each later one gets
    the first free ``-2``, ``-3``, ... suffix (``p1_ax-2.nii.gz``), reported through ``log``.

    Everything is checked before anything is written: no series found raises without creating
    ``out_dir``; an existing output file is an error unless ``overwrite`` (checked again after the
    conversion, right before the files are moved: a file that appeared meanwhile is never
    replaced). The files are written into a hidden staging folder inside ``out_dir`` and moved into
    place only once every series has converted; a failure while moving them takes back the files
    already moved (and restores the ones they replaced), so a failure writes nothing. ITK's own
    warnings are silenced.

    Args:
        src_dir: folder holding DICOM series at any depth.
        out_dir: output folder (created if needed).
        overwrite: replace existing output files of the same names.
        log: called, after a successful conversion, with a one-line note for each series renamed
            because of a name collision.

    Returns:
        The written files, sorted.

    Raises:
        FileNotFoundError: ``src_dir`` does not exist.
        ValueError: no DICOM series found, an output file exists (without ``overwrite``) or a
            series cannot be read.
    """
    import SimpleITK as sitk

    from kmunet.data.io import itk_warnings_off, read_series

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {src}")
    plan = _plan_dicom_names(src)
    if not plan:
        raise ValueError(f"{src}: no DICOM series found")

    def rel(folder: Path) -> str:
        return "/".join(folder.relative_to(src).parts) or src.name

    targets = [out / f"{s.name}.nii.gz" for s in plan]
    if not overwrite:
        _refuse_existing_outputs(targets)
    with _staging(out, "dicom_to_nifti") as stage, itk_warnings_off():
        for s in plan:
            try:
                image = read_series(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(s.folder), s.series_id))
                sitk.WriteImage(image, str(stage / f"{s.name}.nii.gz"))
            except RuntimeError as err:
                raise ValueError(f"{s.folder}: cannot convert DICOM series {s.series_id} "
                                 f"({_itk_error_detail(err)})") from err
        _publish_converted(stage, [f"{s.name}.nii.gz" for s in plan], targets, overwrite)
    if log is not None:  # after success, so that an error stays the only message
        owner = {s.name.casefold(): s for s in plan}
        for s in plan:
            if s.name != s.wanted:
                first = rel(owner[s.wanted.casefold()].folder)
                log(f"{rel(s.folder)}: output name {s.wanted}.nii.gz is taken by {first}; written as {s.name}.nii.gz")
    return sorted(targets)

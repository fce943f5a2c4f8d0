"""Dataset preparation: MSD archives (local and loopback HTTP with resume/checksum), DRIVE, DICOM."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import pytest

from kmunet.config import DataConfig
from kmunet.data import discover_cases, load_array
from kmunet.data.prepare import (
    ChecksumError,
    convert_dicom_folder,
    download_file,
    prepare_drive,
    prepare_msd,
    safe_extract,
    verify_msd,
)
from tests.data.conftest import load_script, make_drive_like, write_dicom_series



@pytest.fixture
def msd_tar(synth3d: Path, tmp_path: Path) -> Path:
    """A tar of the synthetic dataset laid out as ``Task99_Synth/...`` (like the MSD tarballs)."""
    path = tmp_path / "Task99_Synth.tar"
    with tarfile.open(path, "w") as tf:
        tf.add(synth3d, arcname="Task99_Synth")
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_prepare_msd_from_local_archive(msd_tar: Path, tmp_path: Path) -> None:
    root = prepare_msd("Task99_Synth", tmp_path / "out", archive=msd_tar, md5=_md5(msd_tar))
    assert root == tmp_path / "out" / "Task99_Synth" and verify_msd(root) == []
    assert len(discover_cases(DataConfig(root=str(root)))) == 6
    with pytest.raises(ChecksumError):
        prepare_msd("Task99_Synth", tmp_path / "out2", archive=msd_tar, md5="0" * 32)
    with pytest.raises(ValueError, match="Task04_Hippocampus"):
        prepare_msd("Hippocampus", tmp_path / "out3")
    assert load_script("prepare_msd").main(["Task99_Synth", "--out", str(tmp_path / "out4"), "--archive", str(msd_tar)]) == 0


def test_prepare_msd_reports_missing_files(synth3d: Path, tmp_path: Path) -> None:
    src = tmp_path / "Task98_Broken"
    shutil.copytree(synth3d, src)
    (src / "labelsTr" / "synth_002.nii.gz").unlink()
    archive = tmp_path / "broken.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="Task98_Broken")
    with pytest.raises(ValueError, match="synth_002.nii.gz: listed in dataset.json but missing"):
        prepare_msd("Task98_Broken", tmp_path / "out", archive=archive)
    assert load_script("prepare_msd").main(["Task98_Broken", "--out", str(tmp_path / "o2"), "--archive", str(archive)]) == 1


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tf:
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def test_safe_extract_rejects_traversal_and_links(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unsafe"):
        safe_extract(_tar_with(tmp_path / "a.tar", tarfile.TarInfo("../evil.txt"), b"x"), out)
    with pytest.raises(ValueError, match="unsafe"):
        safe_extract(_tar_with(tmp_path / "b.tar", tarfile.TarInfo("/abs/evil.txt"), b"x"), out)
    link = tarfile.TarInfo("data/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ValueError, match="link"):
        safe_extract(_tar_with(tmp_path / "c.tar", link), out)
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../evil.txt", "bad")
    with pytest.raises(ValueError, match="unsafe"):
        safe_extract(tmp_path / "d.zip", out)
    assert not (tmp_path / "evil.txt").exists() and not (out / "ok.txt").exists()
    (tmp_path / "e.bin").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a tar or zip"):
        safe_extract(tmp_path / "e.bin", out)


class _Server:
    """Loopback HTTP server serving ``payload`` with Range support; records request headers."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests: list[dict[str, str]] = []
        self.truncate_next = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(dict(self.headers))
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(server.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate_next:  # drop the connection half-way
                    server.truncate_next = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(msd_tar: Path) -> Iterator[_Server]:
    srv = _Server(msd_tar.read_bytes())
    yield srv
    srv.close()


def test_download_full_and_prepare_from_loopback(server: _Server, msd_tar: Path, tmp_path: Path) -> None:
    root = prepare_msd("Task99_Synth", tmp_path / "out", url=f"{server.url}/Task99_Synth.tar", md5=_md5(msd_tar))
    assert (root / "dataset.json").is_file() and verify_msd(root) == []
    assert (tmp_path / "out" / "Task99_Synth.tar").read_bytes() == server.payload
    assert "Range" not in server.requests[0]


def test_download_resumes_partial_file(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "x.tar"
    half = len(server.payload) // 3
    (tmp_path / "x.tar.part").write_bytes(server.payload[:half])
    seen: list[int] = []
    download_file(f"{server.url}/x.tar", dest, sha256=hashlib.sha256(server.payload).hexdigest(),
                  progress=lambda done, total: seen.append(done))
    assert server.requests[-1]["Range"] == f"bytes={half}-"
    assert dest.read_bytes() == server.payload and not (tmp_path / "x.tar.part").exists()
    assert seen[-1] == len(server.payload)


def test_download_retries_after_dropped_connection(server: _Server, tmp_path: Path) -> None:
    server.truncate_next = True
    dest = download_file(f"{server.url}/x.tar", tmp_path / "x.tar", md5=hashlib.md5(server.payload).hexdigest())
    assert dest.read_bytes() == server.payload
    assert len(server.requests) == 2 and server.requests[1]["Range"].startswith("bytes=")


def test_download_bad_checksum_removes_partial(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="does not match"):
        download_file(f"{server.url}/x.tar", tmp_path / "x.tar", md5="f" * 32)
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "x.tar.part").exists()


def test_failed_download_names_the_url_and_leaves_no_empty_folder(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError):
        prepare_msd("Task99_Synth", tmp_path / "bad_md5", url=f"{server.url}/Task99_Synth.tar", md5="0" * 32)
    assert not (tmp_path / "bad_md5").exists()
    url = f"{server.url}/Task99_Synth.tar"
    server.close()  # nothing listens on the port any more
    with pytest.raises(OSError, match=f"{url}: download failed after 3 attempt"):
        prepare_msd("Task99_Synth", tmp_path / "gone", url=url, md5="0" * 32, timeout=2)
    assert not (tmp_path / "gone").exists()


def test_prepare_drive_verify_flat_and_zip(tmp_path: Path) -> None:
    drive = make_drive_like(tmp_path / "DRIVE" / "training", n=2)
    assert prepare_drive(tmp_path / "DRIVE") == drive
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in drive.rglob("*.*"):
        shutil.copy(p, flat / p.name)
    out = prepare_drive(flat, tmp_path / "reorganised")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["21_training.tif", "22_training.tif"]
    assert len(discover_cases(DataConfig(root=str(out)))) == 2
    zpath = tmp_path / "DRIVE.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in drive.rglob("*.*"):
            zf.write(p, p.relative_to(tmp_path))
    assert load_script("prepare_drive").main([str(zpath), "--out", str(tmp_path / "unzipped")]) == 0
    (drive / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(ValueError, match="22_training_mask.gif: missing field-of-view"):
        prepare_drive(drive)


def test_real_drive_folder_verifies(shared_data: Path) -> None:
    assert prepare_drive(shared_data / "drive" / "training") == shared_data / "drive" / "training"


def test_dicom_to_nifti_synthetic(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).integers(0, 300, (16, 12, 5))
    write_dicom_series(tmp_path / "dicom" / "study" / "series_a", vol)
    files = convert_dicom_folder(tmp_path / "dicom", tmp_path / "nii")
    assert [f.name for f in files] == ["study_series_a.nii.gz"]
    img = nib.load(files[0])
    assert img.shape == (16, 12, 5) and np.array_equal(np.asarray(img.dataobj), vol)
    # the DICOM reader used by the pipelines gives the same array and RAS affine as the NIfTI
    arr, affine, channels = load_array(tmp_path / "dicom" / "study" / "series_a")
    assert channels == 1 and np.array_equal(arr[0], vol)
    assert np.allclose(affine, img.affine, atol=1e-4)
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.8, 0.8, 2.0])
    assert load_script("dicom_to_nifti").main([str(tmp_path / "dicom"), "--out", str(tmp_path / "nii2")]) == 0
    with pytest.raises(ValueError, match="no DICOM"):
        convert_dicom_folder(tmp_path / "nii", tmp_path / "nii3")


def test_dicom_series_through_the_pipeline(tmp_path: Path) -> None:
    from kmunet.config import load_config
    from kmunet.data import build_preprocessing, preprocessing_params

    write_dicom_series(tmp_path / "s", np.random.default_rng(1).integers(1, 300, (16, 12, 5)))
    params = preprocessing_params(load_config(None, ["data.patch_size=[8,8,4]"]))
    out = build_preprocessing(params, keys=("image",))({"image": str(tmp_path / "s")})
    assert out["image"].shape == (1, 16, 12, 5)
    import nibabel.orientations as nio

    assert "".join(nio.aff2axcodes(out["image"].affine.numpy())) == "RAS"


def test_real_dicom_crop_volume(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "dicom_mr" / "Study1" / "13_HCropVolume"
    files = convert_dicom_folder(src, tmp_path)
    assert [f.name for f in files] == ["13_HCropVolume.nii.gz"]
    arr, affine, _ = load_array(src)
    img = nib.load(files[0])
    assert arr.shape[1:] == img.shape == (35, 51, 32)
    assert np.allclose(affine, img.affine, atol=1e-3)

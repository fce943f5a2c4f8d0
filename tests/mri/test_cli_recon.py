"""``kmunet recon`` end to end on small inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kmunet.cli.main import main

nib = pytest.importorskip("nibabel")


def _volume(tmp_path: Path) -> tuple[Path, np.ndarray]:
    yy, xx = np.mgrid[:32, :32] / 32 - 0.5
    vol = np.stack([(xx**2 + yy**2 < 0.1 * (i + 1)) * 100.0 + 5 for i in range(3)], axis=-1)
    affine = np.array([[0, -0.8, 0, 20], [0.9, 0, 0, -3], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    return path, affine


@pytest.mark.parametrize("method", ["zero-filled", "inr"])
def test_cli_image_input(tmp_path: Path, method: str) -> None:
    path, affine = _volume(tmp_path)
    out, js = tmp_path / "out.nii.gz", tmp_path / "m.json"
    argv = ["recon", "--image", str(path), "--slice", "2", "--output", str(out), "--metrics-json", str(js),
            "--method", method, "--acceleration", "3", "--center-fraction", "0.2", "--device", "cpu", "--no-progress"]
    if method == "inr":
        argv += ["--iterations", "10"]
    assert main(argv) == 0
    img = nib.load(str(out))
    assert img.shape == (32, 32, 1)
    expected = affine.copy()
    expected[:, 3] = affine @ [0, 0, 2, 1]
    np.testing.assert_allclose(img.affine, expected, atol=1e-5)
    metrics = json.loads(js.read_text())
    assert set(metrics["metrics"]) == {"psnr", "ssim", "nmse"} and metrics["seconds"] > 0
    assert metrics["mask"]["kind"] == "random"


def test_cli_undersampled_kspace_with_reference(tmp_path: Path) -> None:
    from kmunet.mri.fft import fftnc

    yy, xx = np.mgrid[:32, :32] / 32 - 0.5
    img = (xx**2 + yy**2 < 0.1).astype(float)
    k = fftnc(img)[None].astype(np.complex64)
    k[:, ::3] = 0
    k[:, 14:18] = fftnc(img)[None, 14:18]
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "ref.npy", img * 3.0)
    out, js = tmp_path / "o.nii", tmp_path / "m.json"
    assert main(["recon", "--kspace", str(tmp_path / "k.npy"), "--output", str(out), "--method", "cs-tv",
                 "--iterations", "20", "--reference", str(tmp_path / "ref.npy"), "--metrics-json", str(js)]) == 0
    m = json.loads(js.read_text())
    assert m["mask"]["kind"] == "from data" and m["reference_scaled"] and m["metrics"]["psnr"] > 15
    np.testing.assert_allclose(nib.load(str(out)).affine, np.eye(4))


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.npy"
    bad.write_text("garbage")
    out = tmp_path / "out.nii.gz"
    assert main(["recon", "--kspace", str(bad), "--output", str(out)]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    err = capsys.readouterr().err
    assert "kmunet recon: error:" in err and "bad.npy" in err and len(err.strip().splitlines()) == 1


def test_cli_omega_0_reaches_siren_and_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = _volume(tmp_path)
    psnrs = []
    for omega in (None, "15"):
        js = tmp_path / f"m{omega}.json"
        argv = ["recon", "--image", str(path), "--slice", "2", "--output", str(tmp_path / "o.nii.gz"), "--metrics-json",
                str(js), "--iterations", "10", "--device", "cpu", "--no-progress"]
        assert main(argv + (["--omega-0", omega] if omega else [])) == 0
        psnrs.append(json.loads(js.read_text())["metrics"]["psnr"])
    assert psnrs[0] != psnrs[1]  # same seed and mask: only omega_0 differs
    out = tmp_path / "bad.nii.gz"
    assert main(["recon", "--image", str(path), "--output", str(out), "--inr", "kan", "--omega-0", "15"]) == 1
    assert not out.exists() and "--omega-0 applies to --method inr --inr siren" in capsys.readouterr().err


def test_cli_dc_mu_reaches_the_multicoil_step_and_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kmunet.mri.fft import fftnc

    yy, xx = np.mgrid[:24, :24] / 24
    img = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).astype(float)
    maps = np.stack([np.exp(-((xx - 0.2) ** 2)), 1j * np.exp(-((yy - 0.8) ** 2))])
    np.save(tmp_path / "k.npy", fftnc(maps * img).astype(np.complex64))  # fully sampled 2-coil k-space
    js, out = tmp_path / "m.json", tmp_path / "o.nii.gz"
    argv = ["recon", "--kspace", str(tmp_path / "k.npy"), "--output", str(out), "--metrics-json", str(js),
            "--iterations", "5", "--device", "cpu", "--no-progress", "--acceleration", "2", "--center-fraction", "0.3"]
    assert main(argv + ["--dc-mu", "0.5"]) == 0
    assert json.loads(js.read_text())["info"]["data_consistency"] == "cg10(mu=0.5)"
    bad = tmp_path / "bad.nii.gz"
    for extra, message in ((["--dc-mu", "0"], "--dc-mu must be a positive finite number, got 0.0"),
                           (["--dc-mu", "inf"], "--dc-mu must be a positive finite number, got inf"),
                           (["--dc-mu", "0.5", "--method", "cs-tv"], "--dc-mu applies to --method inr, not cs-tv")):
        assert main(["recon", "--kspace", str(tmp_path / "k.npy"), "--output", str(bad), *extra]) == 1
        assert not bad.exists() and message in capsys.readouterr().err


def test_cli_prior_reaches_the_fit_and_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = _volume(tmp_path)
    js = tmp_path / "m.json"
    argv = ["recon", "--image", str(path), "--slice", "1", "--output", str(tmp_path / "o.nii.gz"), "--metrics-json",
            str(js), "--iterations", "10", "--device", "cpu", "--no-progress"]
    assert main(argv + ["--prior", "log-tv"]) == 0
    assert json.loads(js.read_text())["info"]["prior"] == "log-tv"
    bad = tmp_path / "bad.nii.gz"
    assert main(["recon", "--image", str(path), "--output", str(bad), "--method", "cs-tv", "--prior", "log-tv"]) == 1
    assert not bad.exists() and "--prior applies to --method inr, not cs-tv" in capsys.readouterr().err

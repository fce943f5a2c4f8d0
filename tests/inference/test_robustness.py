"""Bad input never takes down the batch; safe checkpoints; overwrite rules; safe names; CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from kmunet.cli.main import main
from kmunet.inference import discover_cases, load_model, predict_folder, safe_name
from tests.inference.conftest import PARAMS, make_tiny_checkpoint, make_volume, save_nifti, threshold_predictor


def _predict(inp: Path, out: Path, **kw: object):
    return predict_folder(inp, out, predictor=threshold_predictor, preprocessing=PARAMS, device="cpu",
                          progress=False, **kw)


def _no_partial_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []


def _copy_series(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True)
    files = sorted(src.iterdir())
    for f in files:
        shutil.copy(f, dst / f.name)
    return sorted(dst.iterdir())


def test_bad_inputs_are_reported_and_others_processed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    good = make_volume()
    save_nifti(inp / "good.nii.gz", good, np.eye(4))
    save_nifti(inp / "sub" / "good2.nii", good, np.diag([2.0, 1.0, 1.0, 1.0]))
    full = gzip.compress((inp / "sub" / "good2.nii").read_bytes())
    (inp / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    crc = bytearray(full)
    crc[-8] ^= 0xFF  # the gzip trailer's CRC-32 no longer matches: voxels read fine, the file is corrupt
    (inp / "badcrc.nii.gz").write_bytes(bytes(crc))
    (inp / "notanimage.nii.gz").write_text("this is a text file with an image extension\n")
    (inp / "fake.dcm").write_bytes(b"not dicom at all" * 10)
    save_nifti(inp / "flat2d.nii.gz", good[:, :, 0], np.eye(4))
    save_nifti(inp / "vol4d.nii.gz", np.stack([good, good], -1), np.eye(4))
    (inp / "notes.txt").write_text("hello")
    (inp / "emptydir").mkdir()

    out = tmp_path / "out"
    report = _predict(inp, out)
    status = {c.case: (c.status, c.error) for c in report.cases}
    assert status["good"][0] == "ok" and status["good2"][0] == "ok"
    for bad, reason in [("truncated", "not a readable NIfTI"), ("notanimage", "not a readable NIfTI"),
                        ("badcrc", "corrupt gzip stream (CRC check failed)"),
                        ("fake", "not a readable DICOM"), ("flat2d", "2D image"), ("vol4d", "4D image")]:
        assert status[bad][0] == "failed" and reason in status[bad][1], (bad, status[bad])
    assert [Path(f).name for f, _ in report.skipped] == ["notes.txt"]
    assert report.exit_code == 1
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 6 and all(str(inp) in line for line in err_lines)
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz", "good2.nii.gz", "predict_report.csv",
                                                      "predict_report.json"]
    saved = json.loads((out / "predict_report.json").read_text())
    assert saved["n_failed"] == 6 and saved["n_ok"] == 2
    csv_text = (out / "predict_report.csv").read_text()
    assert "truncated" in csv_text and "notes.txt" in csv_text
    # Through the CLI: the same folder gives exit code 1 (good outputs exist -> not failures).
    assert main(["predict", "--input", str(inp), "--output", str(out), "--checkpoint", "unused.pt",
                 "--device", "cpu", "--no-progress"]) == 1  # missing checkpoint -> one-line error
    _no_partial_files(out)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = _predict(tmp_path / "empty", tmp_path / "out")
    assert report.exit_code == 1 and report.cases == []
    assert "no NIfTI files or DICOM series" in report.errors[0]
    assert json.loads((tmp_path / "out" / "predict_report.json").read_text())["errors"]


def test_dicom_missing_slice_and_bad_spacing(tmp_path: Path, hcrop_series: Path) -> None:
    files = _copy_series(hcrop_series, tmp_path / "in" / "missing")
    by_pos = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    by_pos[len(by_pos) // 2].unlink()
    files = _copy_series(hcrop_series, tmp_path / "in" / "spacing")
    uid = pydicom.uid.generate_uid()
    for f in files:  # a distinct series, one slice shifted by 40 % of the spacing
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = "shifted"
        ds.save_as(f)
    ds = pydicom.dcmread(files[3])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float))
    spacing = float(ds.get("SpacingBetweenSlices", ds.SliceThickness))
    ds.ImagePositionPatient = [f"{v:.4f}" for v in np.asarray(ipp) + 0.4 * spacing * normal]
    ds.save_as(files[3])
    save_nifti(tmp_path / "in" / "ok.nii.gz", make_volume(), np.eye(4))

    out = tmp_path / "out"
    report = _predict(tmp_path / "in", out)
    errors = sorted(c.error for c in report.cases if c.status == "failed")
    assert len(errors) == 2, report.to_dict()
    assert any("1 missing slice" in e for e in errors)
    assert any("inconsistent slice spacing" in e for e in errors)
    assert [c.case for c in report.cases if c.status == "ok"] == ["ok"]
    assert report.exit_code == 1
    _no_partial_files(out)


def test_existing_outputs_need_overwrite_and_output_not_in_input(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"precious")
    report = _predict(inp, out)
    assert report.cases[0].status == "exists" and (out / "a.nii.gz").read_bytes() == b"precious"
    report = _predict(inp, out, overwrite=True)
    assert report.cases[0].status == "ok"
    assert nib.load(str(out / "a.nii.gz")).shape == make_volume().shape
    with pytest.raises(ValueError, match="inside the input folder"):
        _predict(inp, inp / "masks")
    report = _predict(inp, inp / "masks", allow_output_in_input=True)
    assert report.exit_code == 0 and [c.case for c in report.cases] == ["a"]  # its own output not re-read


class _Evil:
    def __reduce__(self):  # noqa: D105 - runs code when unpickled without weights_only
        return (Path.touch, (Path(_Evil.marker),))


def test_crafted_checkpoint_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "kmunet-checkpoint", "format_version": 1, "state_dict": {}, "config": {}, "x": _Evil()}, path)
    with pytest.raises(ValueError, match="not a loadable kmunet checkpoint"):
        load_model(path, "cpu")
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    assert main(["predict", "--input", str(inp), "--output", str(tmp_path / "out"), "--checkpoint", str(path),
                 "--device", "cpu", "--no-progress"]) == 1
    assert not marker.exists()


def test_checkpoint_predict_via_cli(tmp_path: Path, tiny_checkpoint: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume((18, 20, 14)), np.diag([1.0, -1.0, 1.5, 1.0]))
    out = tmp_path / "out"
    code = main(["predict", "--input", str(inp), "--output", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu", "--no-progress", "--png"])
    assert code == 0
    mask = nib.load(str(out / "a.nii.gz"))
    assert mask.shape == (18, 20, 14) and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    rows = json.loads((out / "predict_report.json").read_text())["cases"]
    assert rows[0]["status"] == "ok" and set(rows[0]["volumes_mm3"]) == {"anterior", "posterior"}
    assert (out / "a.png").is_file()


def test_safe_names_cannot_escape(tmp_path: Path, hcrop_series: Path) -> None:
    for text in ["../../etc/passwd", "..", "/abs/path", "a\\b:c*?", "", "\x00\n"]:
        name = safe_name(text)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".") and ".." not in name
    files = _copy_series(hcrop_series, tmp_path / "in" / "s")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID = "../../../escape"
        ds.SeriesDescription = "/etc/x"
        ds.save_as(f)
    cases, _ = discover_cases(tmp_path / "in")
    out = tmp_path / "out"
    report = _predict(tmp_path / "in", out)
    assert report.exit_code == 0
    written = Path(report.cases[0].output).resolve()
    assert written.parent == out.resolve() and cases[0].name in written.name
    assert not (tmp_path / "escape").exists()


def test_failed_case_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    nan = make_volume()
    nan[1, 1, 1] = np.nan
    save_nifti(inp / "nan.nii.gz", nan, np.eye(4))

    def broken_png(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("kmunet.inference.predict.write_overlay_png", broken_png)
    report = _predict(inp, tmp_path / "out", png=True, save_probabilities=True)
    errors = {c.case: c.error for c in report.cases}
    assert errors == {"a": "disk full", "nan": "image contains NaN or infinite values"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predict_report.csv", "predict_report.json"]


def test_rerun_keeps_one_report_for_every_mask(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "b.nii.gz", make_volume(), np.eye(4))
    first = _predict(inp, out)
    volumes = {c.case: c.volumes_mm3 for c in first.cases}
    (inp / "b.nii.gz").unlink()
    save_nifti(inp / "c.nii.gz", make_volume(), np.eye(4))
    second = _predict(inp, out)  # a: output exists, c: new, b: not an input any more but its mask is there
    assert {c.case: c.status for c in second.cases} == {"a": "exists", "c": "ok"}  # this run's cases only
    saved = json.loads((out / "predict_report.json").read_text())
    assert {c["case"]: c["status"] for c in saved["cases"]} == {"a": "exists", "b": "ok", "c": "ok"}
    assert saved["n_from_earlier_runs"] == 1 and saved["n_existing"] == 1
    assert {c["case"]: c["volumes_mm3"] for c in saved["cases"]}["a"] == volumes["a"]  # kept from the first run
    assert "b.nii.gz" in (out / "predict_report.csv").read_text()
    (out / "b.nii.gz").unlink()  # a mask deleted since is no longer reported
    _predict(inp, out)
    third = json.loads((out / "predict_report.json").read_text())
    assert "b" not in {c["case"] for c in third["cases"]}
    assert {c["case"]: c["volumes_mm3"] for c in third["cases"]}["a"] == volumes["a"]  # still kept on a third run


def test_one_dicom_file_takes_only_its_series(tmp_path: Path, hcrop_series: Path) -> None:
    inp = tmp_path / "in"
    shutil.copytree(hcrop_series, inp)
    save_nifti(inp / "other.nii.gz", make_volume(), np.eye(4))  # another image in the same folder
    cases, _ = discover_cases(inp / "1.dcm")
    assert [c.kind for c in cases] == ["dicom"]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_sliding_window_batch_is_refused(tmp_path: Path, bad: object) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    with pytest.raises(ValueError, match="sw_batch_size"):
        _predict(inp, tmp_path / "out", sw_batch_size=bad)
    assert not (tmp_path / "out").exists()


def test_non_checkpoint_files_get_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    truncated = tmp_path / "cut.pt"
    torch.save({"x": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    for path in (text, truncated):
        with pytest.raises(ValueError, match=f"{path.name}: not a PyTorch checkpoint file"):
            load_model(path, "cpu")


def test_default_checkpoint_is_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmunet.inference import DEFAULT_CHECKPOINT, resolve_checkpoint
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(DEFAULT_CHECKPOINT) == (REPO_ROOT / DEFAULT_CHECKPOINT).resolve()
    assert resolve_checkpoint("missing.pt") == (tmp_path / "missing.pt").resolve()  # reported later as not found


def test_trailing_singleton_axis_is_segmented_in_the_input_shape(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    save_nifti(inp / "v.nii.gz", make_volume()[..., None], affine)  # (x, y, z, 1), as some tools write
    report = _predict(inp, tmp_path / "out", png=True)
    assert report.exit_code == 0, report.to_dict()
    mask = nib.load(str(tmp_path / "out" / "v.nii.gz"))
    assert mask.shape == make_volume().shape + (1,)
    np.testing.assert_allclose(mask.affine, affine)
    assert report.cases[0].spacing == pytest.approx([0.8, 0.8, 3.0]) and (tmp_path / "out" / "v.png").is_file()
    plain = tmp_path / "plain"
    plain.mkdir()
    save_nifti(plain / "v.nii.gz", make_volume(), affine)
    _predict(plain, tmp_path / "out3d")
    np.testing.assert_array_equal(np.asarray(mask.dataobj)[..., 0], np.asarray(nib.load(str(tmp_path / "out3d" / "v.nii.gz")).dataobj))


def test_predict_with_an_ensemble_of_checkpoints(tmp_path: Path, tiny_checkpoint: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    # 16^3 is one window of the tiny model (no blending), so the ensemble's probabilities are exactly
    # the mean of its members'.
    save_nifti(inp / "a.nii.gz", make_volume((16, 16, 16)), np.diag([1.0, -1.0, 1.5, 1.0]))
    other = torch.load(tiny_checkpoint, weights_only=True)
    gen = torch.Generator().manual_seed(1)
    other["state_dict"] = {k: v + 0.3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() and "grid" not in k
                           else v for k, v in other["state_dict"].items()}
    torch.save(other, tmp_path / "other.pt")
    probs = {}
    for name, ckpts in {"one": [tiny_checkpoint], "other": [tmp_path / "other.pt"],
                        "both": [tiny_checkpoint, tmp_path / "other.pt"]}.items():
        code = main(["predict", "--input", str(inp), "--output", str(tmp_path / name), "--device", "cpu", "--no-progress",
                     "--save-probabilities"] + [a for c in ckpts for a in ("--checkpoint", str(c))])
        assert code == 0
        report = json.loads((tmp_path / name / "predict_report.json").read_text())
        assert report["settings"]["checkpoints"] == [str(Path(c).resolve()) for c in ckpts]
        probs[name] = np.asarray(nib.load(str(tmp_path / name / "a_probabilities.nii.gz")).dataobj)
    assert np.abs(probs["one"] - probs["other"]).max() > 0.05  # the members really differ
    np.testing.assert_allclose(probs["both"], (probs["one"] + probs["other"]) / 2, atol=1e-5)

    renamed = make_tiny_checkpoint(tmp_path / "renamed.pt", {"class_names": ["background", "head", "tail"]})
    with pytest.raises(ValueError, match=r"renamed.pt: cannot be ensembled .* differ in class_names"):
        predict_folder(inp, tmp_path / "three", [tiny_checkpoint, renamed], device="cpu", progress=False)


def test_kept_masks_made_with_other_settings_get_a_note(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()

    def _predict(inp: Path, out: Path, **kw: object):  # a model trained with left-right flips
        return predict_folder(inp, out, predictor=threshold_predictor, preprocessing={**PARAMS, "mirror_axes": [0]},
                              device="cpu", progress=False, **kw)

    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    first = _predict(inp, out)
    assert first.cases[0].made_with["tta"] is False and first.cases[0].note == ""
    lines: list[str] = []
    same = _predict(inp, out, log=lines.append)  # same settings: kept silently
    assert same.cases[0].status == "exists" and same.cases[0].note == "" and not any("note" in x for x in lines)
    second = _predict(inp, out, tta=True, log=lines.append)
    (case,) = second.cases
    assert case.status == "exists" and case.made_with["tta"] is False  # the settings the kept mask was made with
    assert "tta false (this run: true)" in case.note and "mirror_axes [] (this run: [0])" in case.note
    assert any(x.startswith("note: ") and "use --overwrite to redo it" in x for x in lines)
    saved = json.loads((out / "predict_report.json").read_text())
    assert saved["settings"]["tta"] is True and saved["cases"][0]["made_with"]["tta"] is False
    assert "tta false (this run: true)" in (out / "predict_report.csv").read_text()
    redone = _predict(inp, out, tta=True, overwrite=True)
    assert redone.cases[0].status == "ok" and redone.cases[0].made_with["tta"] is True and redone.cases[0].note == ""


def test_a_failed_redo_says_the_earlier_output_was_left(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    _predict(inp, out)
    before = (out / "a.nii.gz").read_bytes()
    (inp / "a.nii.gz").write_bytes(b"truncated")
    lines: list[str] = []
    report = _predict(inp, out, overwrite=True, log=lines.append)
    (case,) = report.cases
    assert case.status == "failed" and case.output == str(out / "a.nii.gz")  # the earlier mask, left in place
    assert case.note == "redoing it failed; the earlier output (a.nii.gz) was left in place"
    assert (out / "a.nii.gz").read_bytes() == before  # nothing lost
    assert any(x == f"note: a: {case.note}" for x in lines)
    saved = {c["case"]: c for c in json.loads((out / "predict_report.json").read_text())["cases"]}
    # the report still describes the mask in the folder: the earlier run's
    assert saved["a"]["status"] == "failed" and saved["a"]["output"] == str(out / "a.nii.gz")
    assert saved["a"]["volumes_mm3"] and saved["a"]["made_with"]["tta"] is False
    later = _predict(inp, out)  # and a later run that keeps it still knows what it is
    assert later.cases[0].status == "exists" and later.cases[0].volumes_mm3 == saved["a"]["volumes_mm3"]
    assert later.cases[0].made_with == saved["a"]["made_with"] and later.cases[0].note == ""


def test_reports_written_before_made_with_existed_are_read(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    _predict(inp, out)
    path = out / "predict_report.json"
    old = json.loads(path.read_text())
    for case in old["cases"]:  # the format of earlier kmunet versions
        del case["made_with"], case["note"]
    old["settings"]["overlap"] = 0.5
    path.write_text(json.dumps(old))
    (case,) = _predict(inp, out).cases
    assert case.status == "exists" and case.made_with["overlap"] == 0.5  # the earlier run's settings
    assert case.note == "kept from an earlier run with other settings: overlap 0.5 (this run: 0.25)"
    assert _predict(inp, out, sw_batch_size=3).cases[0].note == case.note  # batch size changes no mask
    path.write_text(json.dumps({**old, "cases": [{**old["cases"][0], "made_with": "garbage"}]}))
    assert _predict(inp, out).cases[0].made_with == {}  # a damaged report is not a crash


def test_constant_image_gets_a_warning(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "blank.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    (case,) = _predict(inp, tmp_path / "out").cases
    assert case.status == "ok" and case.warning.startswith("the image is constant (0 everywhere): the mask is meaningless")


def test_nifti_spatial_units_other_than_mm_get_a_warning(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    img = nib.Nifti1Image(make_volume(), np.eye(4))
    img.header.set_xyzt_units("micron", "sec")
    nib.save(img, str(inp / "um.nii.gz"))
    save_nifti(inp / "mm.nii.gz", make_volume(), np.eye(4))
    cases = {c.case: c for c in _predict(inp, tmp_path / "out").cases}
    assert cases["um"].status == "ok" and "spatial units of 'micron', read here as mm" in cases["um"].warning
    assert "spatial units" not in cases["mm"].warning

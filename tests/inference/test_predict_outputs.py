"""Output safety of ``predict_folder``: who made an existing output, outputs that would overwrite inputs or
each other, multi-channel inputs, all-or-nothing output sets (failures, Ctrl-C), reports that read the same
from any working directory, NIfTI headers copied exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from kmunet.inference import discover_cases, predict_folder
from tests.inference.conftest import PARAMS, make_volume, save_nifti, threshold_predictor


def _predict(inp: Path | str, out: Path | str, **kw: object):
    return predict_folder(inp, out, predictor=threshold_predictor, preprocessing=PARAMS, device="cpu",
                          progress=False, **kw)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name)


def _by_input(report) -> dict[str, object]:
    return {c.input: c for c in report.cases}


# --- 1: an existing output made from another input ------------------------------------------------------

def test_existing_output_made_from_another_input_is_a_clash(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "b").mkdir(parents=True)
    b = save_nifti(inp / "b" / "img.nii.gz", make_volume(seed=1), np.eye(4))
    _predict(inp, out)
    made_by_b = (out / "img.nii.gz").read_bytes()
    (inp / "a").mkdir()
    a = save_nifti(inp / "a" / "img.nii.gz", make_volume((18, 20, 16), seed=2), np.eye(4))
    names = {Path(c.path).resolve(): c.name for c in discover_cases(inp)[0]}
    lines: list[str] = []
    report = _predict(inp, out, log=lines.append)
    res_a = _by_input(report)[str(a.resolve())]
    assert not (res_a.status == "exists" and res_a.output == str(out / "img.nii.gz"))  # never b's mask as a's
    if names[a.resolve()] == "img":  # a now has the output name b's mask was written under
        assert res_a.status == "failed" and str(a.resolve()) in res_a.error and str(b.resolve()) in res_a.error
        assert any(x.startswith("error: ") and str(b.resolve()) in x for x in lines)  # one line, both inputs
        assert report.exit_code == 1
    assert (out / "img.nii.gz").read_bytes() == made_by_b
    saved = json.loads((out / "predict_report.json").read_text())
    # the report still says that img.nii.gz is b's
    assert any(c["input"] == str(b.resolve()) and c["output"] == str(out / "img.nii.gz") for c in saved["cases"])


def test_clash_when_the_input_of_a_name_changed(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "b").mkdir(parents=True)
    b = save_nifti(inp / "b" / "img.nii.gz", make_volume(seed=1), np.eye(4))
    first = _predict(inp, out)
    made_by_b = (out / "img.nii.gz").read_bytes()
    (inp / "a").mkdir()
    a = (inp / "a" / "img.nii.gz")
    b.rename(a)  # the only input is now in/a/img.nii.gz: case img, whose output was made from in/b
    (case,) = _predict(inp, out).cases
    assert case.status == "failed" and case.input == str(a.resolve())
    assert "img.nii.gz exists but was made from another input" in case.error
    assert str(b.resolve()) in case.error and str(a.resolve()) in case.error
    assert (out / "img.nii.gz").read_bytes() == made_by_b
    saved = {(c["case"], c["input"]): c for c in json.loads((out / "predict_report.json").read_text())["cases"]}
    assert saved[("img", str(b.resolve()))]["volumes_mm3"] == first.cases[0].volumes_mm3  # b's row kept
    assert _predict(inp, out).cases[0].status == "failed"  # still a clash on the next run
    (redone,) = _predict(inp, out, overwrite=True).cases  # --overwrite replaces it with a's mask
    assert redone.status == "ok"
    saved = json.loads((out / "predict_report.json").read_text())["cases"]
    assert [c["input"] for c in saved] == [str(a.resolve())]  # b's row no longer describes img.nii.gz
    assert _predict(inp, out).cases[0].status == "exists"


# --- 2: outputs that are input files ---------------------------------------------------------------------

def test_output_folder_equal_to_input_never_overwrites_inputs(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "x.nii.gz", make_volume(seed=3), np.eye(4))
    save_nifti(inp / "x_probabilities.nii.gz", make_volume(seed=4), np.eye(4))
    before = {p.name: p.read_bytes() for p in inp.iterdir()}
    lines: list[str] = []
    report = _predict(inp, inp, allow_output_in_input=True, overwrite=True, save_probabilities=True,
                      log=lines.append)
    assert {c.case: c.status for c in report.cases} == {"a": "failed", "x": "failed", "x_probabilities": "failed"}
    errors = {c.case: c.error for c in report.cases}
    assert errors["a"] == f"its mask a.nii.gz would overwrite its own input, {inp / 'a.nii.gz'}; write the outputs to another folder"
    assert all(p.read_bytes() == before[p.name] for p in inp.iterdir() if p.name in before)  # scans untouched
    assert sorted(before) == sorted(p.name for p in inp.iterdir() if p.suffix == ".gz")
    assert len([x for x in lines if x.startswith("error: ")]) == 3 and report.exit_code == 1
    report = _predict(inp, inp, allow_output_in_input=True)  # without --overwrite: refused too, not "exists"
    assert {c.status for c in report.cases} == {"failed"}



def test_outputs_never_overwrite_skipped_files_of_the_input_folder(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    (inp / "scans").mkdir(parents=True)
    save_nifti(inp / "scans" / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "scans" / "b.nii.gz", make_volume(seed=2), np.eye(4))
    (inp / "a.png").write_bytes(b"not a case of a 3D model")  # skipped, but a's --png overlay would be a.png
    report = _predict(inp, inp, allow_output_in_input=True, overwrite=True, png=True)
    status = {c.case: (c.status, c.error) for c in report.cases}
    assert status["a"][0] == "failed" and "a file of the input folder that is not a case" in status["a"][1]
    assert status["b"][0] == "ok" and (inp / "b.png").is_file()
    assert (inp / "a.png").read_bytes() == b"not a case of a 3D model"

# --- 3: two cases writing the same output ----------------------------------------------------------------

def test_cases_whose_outputs_collide_fail_and_others_run(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "x.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "x_probabilities.nii.gz", make_volume(seed=5), np.eye(4))
    save_nifti(inp / "y.nii.gz", make_volume(seed=6), np.eye(4))
    lines: list[str] = []
    report = _predict(inp, out, save_probabilities=True, log=lines.append)
    status = {c.case: c.status for c in report.cases}
    assert status == {"x": "failed", "x_probabilities": "failed", "y": "ok"}
    errors = {c.case: c.error for c in report.cases}
    assert errors["x"].startswith("its probability map x_probabilities.nii.gz would also be the mask of case x_probabilities")
    assert errors["x_probabilities"].startswith("its mask x_probabilities.nii.gz would also be the probability map of case x ")
    assert len([x for x in lines if x.startswith("error: ")]) == 2  # one line per affected case
    assert not (out / "x.nii.gz").exists() and not (out / "x_probabilities.nii.gz").exists()
    assert (out / "y.nii.gz").is_file() and (out / "y_probabilities.nii.gz").is_file()
    assert {c.status for c in _predict(inp, tmp_path / "plain").cases} == {"ok"}  # no clash without the maps


# --- 4: multi-channel NIfTI inputs -----------------------------------------------------------------------

def test_multichannel_nifti_gets_a_spatial_mask(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    vol = make_volume()
    data = np.stack([vol, vol[::-1] * 0.5], axis=-1)  # (20, 24, 16, 2)
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_intent("vector")
    nib.save(img, str(inp / "mc.nii.gz"))
    params = {**PARAMS, "in_channels": 2}
    report = predict_folder(inp, out, predictor=lambda x: threshold_predictor(x[:, :1]), preprocessing=params,
                            device="cpu", progress=False, save_probabilities=True, png=True)
    assert report.exit_code == 0, report.to_dict()
    mask = nib.load(str(out / "mc.nii.gz"))
    assert mask.shape == vol.shape and mask.get_data_dtype() == np.uint8
    assert mask.header.get_intent()[0] == "none"
    np.testing.assert_allclose(mask.affine, affine)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (vol > 50).astype(np.uint8))
    probs = nib.load(str(out / "mc_probabilities.nii.gz"))
    assert probs.shape == vol.shape + (2,) and probs.header.get_intent()[0] == "vector"
    assert (out / "mc.png").is_file()


def test_trailing_singletons_only_when_they_are_singletons(tmp_path: Path) -> None:
    from kmunet.inference.cases import Case, load_case
    from kmunet.inference.writers import write_like_input

    save_nifti(tmp_path / "s.nii.gz", make_volume()[..., None], np.eye(4))
    image = load_case(Case("s", "nifti", tmp_path / "s.nii.gz"))
    assert write_like_input(tmp_path / "m.nii.gz", np.zeros(make_volume().shape), image).exists()
    assert nib.load(str(tmp_path / "m.nii.gz")).shape == make_volume().shape + (1,)


# --- 5 and 6: a case's outputs are renamed into place together -------------------------------------------

def test_a_failed_overwrite_redo_keeps_the_whole_earlier_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    _predict(inp, out, save_probabilities=True, png=True)
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("predict_report")}
    assert sorted(before) == ["a.nii.gz", "a.png", "a_probabilities.nii.gz"]

    def broken_png(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("kmunet.inference.predict.write_overlay_png", broken_png)
    (case,) = _predict(inp, out, save_probabilities=True, png=True, overwrite=True).cases
    assert case.status == "failed" and case.error == "disk full"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before  # nothing lost
    assert case.note == "redoing it failed; the earlier output (a.nii.gz, a_probabilities.nii.gz, a.png) was left in place"
    assert _hidden(out) == []


def test_overlay_figures_are_closed_when_saving_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from kmunet.inference.writers import write_overlay_png

    plt.close("all")
    vol, mask = make_volume(), (make_volume() > 50).astype(np.uint8)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):  # the path check
        write_overlay_png(tmp_path / "folder.png", vol, mask)
    with pytest.raises(ValueError, match="is a folder"):
        write_overlay_png(tmp_path / "folder.png", vol[:, :, 0], mask[:, :, 0])

    def broken_savefig(self: Figure, *args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_overlay_png(tmp_path / "o.png", vol, mask)
    assert plt.get_fignums() == [] and not (tmp_path / "o.png").exists()
    assert _hidden(tmp_path) == []


def test_ctrl_c_mid_case_leaves_nothing_a_rerun_would_keep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmunet.inference import predict as predict_module

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "b.nii.gz", make_volume(seed=7), np.eye(4))
    real = predict_module.write_overlay_png
    calls: list[Path] = []

    def interrupted(path: Path, *args: object, **kwargs: object) -> Path:
        calls.append(Path(path))
        if len(calls) == 2:  # Ctrl-C while case b writes its overlay, after its mask
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predict_module, "write_overlay_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _predict(inp, out, png=True, save_probabilities=True)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("b")) == []  # b's mask never appeared
    assert _hidden(out) == []
    saved = json.loads((out / "predict_report.json").read_text())  # the cases done before Ctrl-C are recorded
    assert [(c["case"], c["status"]) for c in saved["cases"]] == [("a", "ok")]
    monkeypatch.setattr(predict_module, "write_overlay_png", real)
    report = _predict(inp, out, png=True, save_probabilities=True)
    assert {c.case: c.status for c in report.cases} == {"a": "exists", "b": "ok"}
    assert report.cases[0].volumes_mm3  # a's row came from the report written at the interrupt


# --- 7: reports read the same from any working directory -------------------------------------------------

def test_rerun_from_another_working_directory_keeps_earlier_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "b.nii.gz", make_volume(seed=8), np.eye(4))
    monkeypatch.chdir(tmp_path)
    first = _predict("in", "out")  # relative paths, as typed on a command line
    assert first.cases[0].input == str(inp / "a.nii.gz") and first.cases[0].output == str(tmp_path / "out" / "a.nii.gz")
    volumes = {c.case: c.volumes_mm3 for c in first.cases}
    (inp / "b.nii.gz").unlink()
    save_nifti(inp / "c.nii.gz", make_volume(seed=9), np.eye(4))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    second = _predict("../in", "../out")
    assert {c.case: c.status for c in second.cases} == {"a": "exists", "c": "ok"}
    assert second.cases[0].volumes_mm3 == volumes["a"]  # recognised as the same input
    saved = {c["case"]: c for c in json.loads((tmp_path / "out" / "predict_report.json").read_text())["cases"]}
    assert sorted(saved) == ["a", "b", "c"]  # b's mask is still described
    assert saved["b"]["volumes_mm3"] == volumes["b"] and saved["b"]["input"] == str(inp / "b.nii.gz")
    assert all(Path(c["input"]).is_absolute() and Path(c["output"]).is_absolute() for c in saved.values())


def test_old_reports_with_relative_paths_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    save_nifti(inp / "b.nii.gz", make_volume(seed=8), np.eye(4))
    _predict(inp, out)
    path = out / "predict_report.json"
    data = json.loads(path.read_text())
    for c in data["cases"]:  # as kmunet wrote them when run from tmp_path as `--input in --output out`
        c["input"], c["output"] = os.path.relpath(c["input"], tmp_path), os.path.relpath(c["output"], tmp_path)
    volumes = {c["case"]: c["volumes_mm3"] for c in data["cases"]}
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "cwd"}))
    (inp / "b.nii.gz").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (case,) = _predict(inp, out).cases  # no cwd recorded: relative to the output folder's parent
    assert case.status == "exists" and case.volumes_mm3 == volumes["a"]
    saved = {c["case"]: c for c in json.loads(path.read_text())["cases"]}
    assert saved["b"]["input"] == str(inp / "b.nii.gz") and saved["b"]["volumes_mm3"] == volumes["b"]
    data = json.loads(path.read_text())
    assert data["cwd"] == str(tmp_path / "elsewhere")
    for c in data["cases"]:  # relative to a recorded cwd
        c["input"], c["output"] = os.path.relpath(c["input"], tmp_path / "elsewhere"), os.path.relpath(c["output"], tmp_path / "elsewhere")
    path.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    (case,) = _predict(inp, out).cases
    assert case.status == "exists" and case.volumes_mm3 == volumes["a"]



def test_old_report_with_relative_input_and_absolute_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cd T && kmunet predict --input in --output /abs/results/out` (an earlier kmunet, no cwd recorded)."""
    inp, out = tmp_path / "in", tmp_path / "results" / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    _predict(inp, out)
    path = out / "predict_report.json"
    data = json.loads(path.read_text())
    for c in data["cases"]:
        c["input"] = os.path.relpath(c["input"], tmp_path)  # relative input, absolute output
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "cwd"}))
    monkeypatch.chdir(tmp_path)
    report = _predict("in", out)
    (case,) = report.cases
    assert case.status == "exists" and report.exit_code == 0  # not "made from another input"


# --- 9: case names never collide, refused cases keep their earlier record, renames roll back ------------

def test_deduplicated_names_do_not_take_a_real_case_name(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for sub in ("a", "b"):
        (inp / sub).mkdir(parents=True)
    a = save_nifti(inp / "a" / "img.nii.gz", make_volume(seed=1), np.eye(4))
    b = save_nifti(inp / "b" / "img.nii.gz", make_volume((18, 20, 16), seed=2), np.eye(4))
    c = save_nifti(inp / "img_2.nii.gz", make_volume((22, 22, 18), seed=3), np.eye(4))
    names = [x.name for x in discover_cases(inp)[0]]
    assert len({n.lower() for n in names}) == 3 and "img_2" in names
    report = _predict(inp, out, overwrite=True)
    assert [x.status for x in report.cases] == ["ok"] * 3
    outputs = {x.input: x.output for x in report.cases}
    assert len(set(outputs.values())) == 3  # three masks, none written twice
    for src, shape in ((a, (20, 24, 16)), (b, (18, 20, 16)), (c, (22, 22, 18))):
        assert nib.load(outputs[str(src.resolve())]).shape == shape


def test_unique_names() -> None:
    from kmunet.inference.cases import unique_names

    assert unique_names(["img", "img", "img_2"]) == ["img", "img_3", "img_2"]
    assert unique_names(["A", "a", "a_2", "b"]) == ["A", "a_3", "a_2", "b"]
    assert unique_names(["x", "x", "x"]) == ["x", "x_2", "x_3"]


def test_refused_cases_keep_the_earlier_record_of_their_masks(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "x.nii.gz", make_volume(seed=1), np.eye(4))
    save_nifti(inp / "x_probabilities.nii.gz", make_volume(seed=2), np.eye(4))
    first = {c.case: c for c in _predict(inp, out).cases}
    lines: list[str] = []
    second = _predict(inp, out, save_probabilities=True, log=lines.append)  # x's map would be the other's mask
    assert [c.status for c in second.cases] == ["failed", "failed"]
    assert all("left in place" in c.note for c in second.cases)
    assert any(x.startswith("note: x: it was refused") for x in lines)
    third = {c.case: c for c in _predict(inp, out).cases}
    for name in ("x", "x_probabilities"):  # still described with the first run's details
        assert third[name].status == "exists"
        assert third[name].volumes_mm3 == first[name].volumes_mm3 and third[name].shape == first[name].shape
        assert third[name].made_with == first[name].made_with


def test_staged_commit_rolls_back_to_the_earlier_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmunet.inference import writers

    old = {name: (tmp_path / name) for name in ("m.nii.gz", "p.nii.gz")}
    for name, path in old.items():
        path.write_text(f"old {name}")
    real, failed = os.replace, []

    def flaky(src: object, dst: object) -> None:
        if Path(dst).name == "m.nii.gz" and ".tmp-" in Path(src).name and not failed and "new" in Path(src).read_text():
            failed.append(dst)
            raise OSError("EIO on rename")
        real(src, dst)

    monkeypatch.setattr(writers.os, "replace", flaky)
    with pytest.raises(OSError, match="EIO"):
        with writers.staged_outputs() as stage:
            for name in ("p.nii.gz", "m.nii.gz"):  # p is renamed first, then m fails
                stage.temp(tmp_path / name).write_text(f"new {name}")
    assert failed
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"old {n}" for n in old}  # all as before
    with writers.staged_outputs() as stage:  # and a clean commit replaces them and leaves nothing hidden
        for name in old:
            stage.temp(tmp_path / name).write_text(f"new {name}")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"new {n}" for n in old}

# --- 8: NIfTI headers copied exactly ---------------------------------------------------------------------

_GEOMETRY = ("pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
             "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")


def _qform_only(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), 0)  # stale srow, code 0: must stay as it is
    nib.save(img, str(path))
    return path


def _sform_only(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, 1)
    img.set_qform(None, 0)
    img.header["pixdim"][1:4] = 1.0  # pixdim 1 1 1; the sform says 0.9 1.1 1.3
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("kind", ["qform_only", "sform_only"])
def test_mask_header_geometry_is_the_inputs(tmp_path: Path, kind: str) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    affine = np.array([[0.9, 0, 0, 4.0], [0, 1.1, 0, -2.0], [0, 0, 1.3, 9.0], [0, 0, 0, 1]])
    (_qform_only if kind == "qform_only" else _sform_only)(inp / "v.nii.gz", make_volume(), affine)
    report = _predict(inp, out, save_probabilities=True)
    assert report.exit_code == 0, report.to_dict()
    a, m = sitk.ReadImage(str(inp / "v.nii.gz")), sitk.ReadImage(str(out / "v.nii.gz"))
    assert (m.GetSpacing(), m.GetOrigin(), m.GetDirection()) == (a.GetSpacing(), a.GetOrigin(), a.GetDirection())
    src = nib.load(str(inp / "v.nii.gz")).header
    for name in ("v.nii.gz", "v_probabilities.nii.gz"):  # and the fields themselves, byte for byte
        hdr = nib.load(str(out / name)).header
        for key in _GEOMETRY:
            np.testing.assert_array_equal(np.asarray(hdr[key]), np.asarray(src[key]), err_msg=f"{name}: {key}")


def test_a_damaged_earlier_report_is_not_a_crash(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", make_volume(), np.eye(4))
    _predict(inp, out)
    path = out / "predict_report.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "cwd": 7, "cases": [{**data["cases"][0], "input": 3, "output": None}, 5]}))
    assert _predict(inp, out).cases[0].status == "exists"

"""The out-of-domain check `kmunet predict` runs against a checkpoint's training-data summary."""

from __future__ import annotations

from kmunet.data import domain_warning, training_data_summary

SUMMARY = training_data_summary({"spacing_min": [1.0, 1.0, 1.0], "spacing_max": [1.2, 1.0, 1.5],
                                 "shape_min": [30, 40, 26], "shape_max": [43, 59, 47], "spacings": {}})


def test_inside_the_training_range_is_quiet() -> None:
    assert SUMMARY == {"spacing_min": [1.0, 1.0, 1.0], "spacing_max": [1.2, 1.0, 1.5],
                       "shape_min": [30.0, 40.0, 26.0], "shape_max": [43.0, 59.0, 47.0]}
    assert domain_warning(SUMMARY, [1.0, 1.0, 1.0], [35, 51, 35]) == ""
    assert domain_warning(SUMMARY, [0.6, 2.5, 1.1], [35, 51, 35]) == ""  # within a factor 2 of the range
    assert domain_warning(SUMMARY, [1.0, 1.5, 1.0], [51, 35, 35]) == ""  # axis order does not matter


def test_voxel_size_and_field_of_view_are_flagged() -> None:
    fine = domain_warning(SUMMARY, [0.4, 1.0, 1.0], [35, 51, 35])
    assert "voxel size 0.4x1x1 mm" in fine and "field of view" not in fine
    big = domain_warning(SUMMARY, [1.0, 1.0, 1.0], [256, 256, 180])
    assert "field of view" in big and "voxel size" not in big
    assert "unreliable" in domain_warning(SUMMARY, [0.43, 0.43, 6.5], [512, 512, 22])
    assert "voxel size 0.4x1x1 mm vs 1x1x1-1.2x1x1.5 mm in training" in fine
    one_spacing = {**SUMMARY, "spacing_max": [1.0, 1.0, 1.0]}  # trained on one voxel size: no range
    assert "voxel size 0.4x1x1 mm vs 1x1x1 mm in training" in domain_warning(one_spacing, [0.4, 1.0, 1.0], [35, 51, 35])


def test_no_summary_or_other_dimensionality_means_no_check() -> None:
    assert domain_warning(None, [9.0, 9.0, 9.0], [500, 500, 500]) == ""
    assert domain_warning({}, [9.0, 9.0, 9.0], [500, 500, 500]) == ""
    assert domain_warning(SUMMARY, [9.0, 9.0], [500, 500]) == ""
    assert training_data_summary({}) == {"spacing_min": [], "spacing_max": [], "shape_min": [], "shape_max": []}

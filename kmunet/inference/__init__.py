"""Inference: folder prediction with exact geometry, NIfTI / DICOM-SEG export, reports.

Public API:

* :func:`predict_folder` -> :class:`PredictReport` (``kmunet predict``), :func:`predict_image`,
  :func:`load_model`, :func:`inference_transforms` (:mod:`kmunet.inference.predict`)
* :func:`discover_cases`, :func:`load_case`, :class:`Case`, :func:`safe_name` (:mod:`kmunet.inference.cases`)
* :func:`write_dicom_seg`, :func:`read_dicom_seg` (:mod:`kmunet.inference.dicom_seg`)
* :func:`export_nifti` -> :class:`ExportReport` (``kmunet export-nifti``, :mod:`kmunet.inference.export`)
"""

from __future__ import annotations

from kmunet.inference.cases import Case, LoadedImage, discover_cases, load_case, read_series, safe_name
from kmunet.inference.dicom_seg import read_dicom_seg, write_dicom_seg
from kmunet.inference.export import ExportReport, export_nifti
from kmunet.inference.predict import (
    DEFAULT_CHECKPOINT,
    CaseResult,
    LoadedModel,
    PredictReport,
    inference_transforms,
    load_model,
    predict_folder,
    predict_image,
    resolve_checkpoint,
    resolve_device,
)
from kmunet.inference.writers import atomic_path, write_like_input, write_overlay_png

__all__ = [
    "DEFAULT_CHECKPOINT",
    "Case",
    "CaseResult",
    "ExportReport",
    "LoadedImage",
    "LoadedModel",
    "PredictReport",
    "atomic_path",
    "discover_cases",
    "export_nifti",
    "inference_transforms",
    "load_case",
    "load_model",
    "predict_folder",
    "predict_image",
    "read_dicom_seg",
    "read_series",
    "resolve_checkpoint",
    "resolve_device",
    "safe_name",
    "write_dicom_seg",
    "write_like_input",
    "write_overlay_png",
]

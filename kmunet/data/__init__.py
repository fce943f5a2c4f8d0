"""Data: dataset discovery, splits, MONAI transforms, datasets/loaders, validation and preparation.

Public API (see each module for details):

* :func:`discover_cases`, :func:`split_cases` (:mod:`kmunet.data.discovery`)
* :func:`preprocessing_params`, :func:`build_preprocessing`, :func:`build_train_transforms`,
  :func:`build_val_transforms` (:mod:`kmunet.data.transforms`)
* :func:`build_dataloaders`, :func:`build_val_loader` (:mod:`kmunet.data.loaders`)
* :func:`validate_dataset`, :class:`ValidationReport` (:mod:`kmunet.data.validation`)
* :func:`make_synthetic_dataset` (:mod:`kmunet.data.synthetic`)
* :func:`prepare_msd`, :func:`prepare_drive`, :func:`convert_dicom_folder` (:mod:`kmunet.data.prepare`)
"""

from __future__ import annotations

from kmunet.data.discovery import detect_layout, discover_cases, split_cases
from kmunet.data.io import KmunetImageReader, load_array
from kmunet.data.loaders import build_dataloaders, build_val_loader, make_dataset
from kmunet.data.prepare import convert_dicom_folder, download_file, prepare_drive, prepare_msd, safe_extract
from kmunet.data.synthetic import make_synthetic_dataset
from kmunet.data.transforms import (
    build_preprocessing,
    build_train_transforms,
    build_val_transforms,
    preprocessing_params,
)
from kmunet.data.validation import Problem, ValidationReport, domain_warning, training_data_summary, validate_dataset

__all__ = [
    "KmunetImageReader",
    "Problem",
    "ValidationReport",
    "build_dataloaders",
    "build_val_loader",
    "build_preprocessing",
    "build_train_transforms",
    "build_val_transforms",
    "convert_dicom_folder",
    "detect_layout",
    "discover_cases",
    "download_file",
    "load_array",
    "make_dataset",
    "make_synthetic_dataset",
    "prepare_drive",
    "prepare_msd",
    "preprocessing_params",
    "safe_extract",
    "split_cases",
    "domain_warning",
    "training_data_summary",
    "validate_dataset",
]

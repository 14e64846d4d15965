"""Reading and writing volumes with their geometry, finding dataset cases, and validating datasets."""
from voxseg.io.dataset_json import read_dataset_labels
from voxseg.io.datasets import Case, Dataset, label_to_int, read_case
from voxseg.io.files import check_writable, made_folder, save_json_atomic, write_atomic
from voxseg.io.image import (ImageGeometry, is_nifti, orientation_code, read_geometry, read_volume, strip_nifti_suffix,
                             write_volume)
from voxseg.io.layouts import LABEL_SUFFIXES, LAYOUTS, load_dataset
from voxseg.io.prediction_cases import find_prediction_cases
from voxseg.io.validate import (
    DIRECTION_TOLERANCE_DEG,
    ORIGIN_TOLERANCE_MM,
    SPACING_TOLERANCE_MM,
    CaseSummary,
    Problem,
    ValidationReport,
    format_table,
    geometry_difference,
    validate_dataset,
)

__all__ = [
    "save_json_atomic", "write_atomic",
    # image.py
    "ImageGeometry",
    "orientation_code",
    "read_volume",
    "read_geometry",
    "write_volume",
    "is_nifti",
    "strip_nifti_suffix",
    # datasets.py
    "Case",
    "Dataset",
    "read_case",
    "label_to_int",
    # layouts.py
    "LAYOUTS",
    "LABEL_SUFFIXES",
    "load_dataset",
    # prediction_cases.py
    "find_prediction_cases",
    # dataset_json.py
    "read_dataset_labels",
    # validate.py
    "CaseSummary",
    "Problem",
    "ValidationReport",
    "validate_dataset",
    "geometry_difference",
    "check_writable",
    "made_folder",
    "format_table",
    "ORIGIN_TOLERANCE_MM",
    "SPACING_TOLERANCE_MM",
    "DIRECTION_TOLERANCE_DEG",
]

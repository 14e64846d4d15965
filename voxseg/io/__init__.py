"""Reading and writing volumes with their geometry, finding dataset cases, and validating datasets."""
from voxseg.io.datasets import (
    LABEL_SUFFIXES,
    LAYOUTS,
    Case,
    Dataset,
    find_prediction_cases,
    label_to_int,
    load_dataset,
    read_case,
    read_dataset_labels,
)
from voxseg.io.files import save_json_atomic, write_atomic
from voxseg.io.image import (ImageGeometry, is_nifti, orientation_code, read_geometry, read_volume, strip_nifti_suffix,
                             write_volume)
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
    "LAYOUTS",
    "LABEL_SUFFIXES",
    "load_dataset",
    "find_prediction_cases",
    "read_case",
    "read_dataset_labels",
    "label_to_int",
    # validate.py
    "CaseSummary",
    "Problem",
    "ValidationReport",
    "validate_dataset",
    "geometry_difference",
    "format_table",
    "ORIGIN_TOLERANCE_MM",
    "SPACING_TOLERANCE_MM",
    "DIRECTION_TOLERANCE_DEG",
]

"""Images, landmarks, DIR-Lab/IXI loaders and displacement-field/transform files (all LPS mm)."""
from __future__ import annotations

from .dirlab import (DIRLAB_CASES, DirLabCase, dirlab_geometry, find_dirlab_files, load_dirlab_case,
                     read_dirlab_image, write_dirlab_image)
from .image import Image, ImageError, from_sitk, to_sitk
from .images import (ImageWarning, normalize_intensity, read_image, read_label_map, resample_image,
                     validate_image, write_image)
from .ixi import IXISubject, list_ixi_subjects, load_ixi_subject
from .landmarks import (LandmarkError, LandmarkWarning, check_landmark_pairs, landmark_format, parse_dirlab_text,
                        read_dirlab_txt, read_elastix_points, read_fcsv, read_landmark_csv, read_landmarks,
                        read_markups_json, write_dirlab_txt, write_elastix_points, write_fcsv, write_landmark_csv,
                        write_landmarks, write_markups_json)
from .transforms import (TransformFileError, field_to_sitk, read_displacement_field, read_transform, sitk_to_field,
                         transform_points, write_displacement_field, write_transform)

__all__ = [
    "Image", "ImageError", "ImageWarning", "from_sitk", "to_sitk",
    "read_image", "write_image", "read_label_map", "resample_image", "normalize_intensity", "validate_image",
    "LandmarkError", "LandmarkWarning", "landmark_format", "read_landmarks", "write_landmarks",
    "read_markups_json", "write_markups_json", "read_fcsv", "write_fcsv", "read_landmark_csv", "write_landmark_csv",
    "read_dirlab_txt", "parse_dirlab_text", "write_dirlab_txt", "read_elastix_points", "write_elastix_points",
    "check_landmark_pairs",
    "DIRLAB_CASES", "DirLabCase", "dirlab_geometry", "read_dirlab_image", "write_dirlab_image",
    "find_dirlab_files", "load_dirlab_case",
    "IXISubject", "list_ixi_subjects", "load_ixi_subject",
    "TransformFileError", "field_to_sitk", "sitk_to_field", "write_displacement_field", "read_displacement_field",
    "write_transform", "read_transform", "transform_points",
]

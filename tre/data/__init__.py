"""Safe data: opt-outs, pseudonymisation keys, the extract pipeline, synthetic data.

Provisioning (which needs the store) is in ``tre.data.provision``, so the pipeline imports light."""

from tre.data._export import ExportedExtract, check_export_directory, export_extract
from tre.data._keys import KeyProvider, PseudonymKey, hmac_pads, pseudonym
from tre.data._optout import ParsedOptOuts, parse_optout_file
from tre.data._pipeline import (
    EngineLimits,
    ExtractCounts,
    ExtractResult,
    check_source_columns,
    run_extract,
    sha256_file,
)
from tre.data._plan import ExtractPlan, OutputColumn, Transform, plan_extract, transform_for
from tre.data._synthetic import SyntheticFiles, episodes_table, write_demo_data

__all__ = [
    "EngineLimits",
    "ExportedExtract",
    "ExtractCounts",
    "ExtractPlan",
    "ExtractResult",
    "KeyProvider",
    "OutputColumn",
    "ParsedOptOuts",
    "PseudonymKey",
    "SyntheticFiles",
    "Transform",
    "check_export_directory",
    "check_source_columns",
    "episodes_table",
    "export_extract",
    "hmac_pads",
    "parse_optout_file",
    "plan_extract",
    "pseudonym",
    "run_extract",
    "sha256_file",
    "transform_for",
    "write_demo_data",
]

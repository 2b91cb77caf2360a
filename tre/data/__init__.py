"""Safe data: opt-outs, pseudonymisation keys, the extract pipeline, provisioning, synthetic data."""

from tre.data._keys import KeyProvider, PseudonymKey, hmac_pads, pseudonym
from tre.data._optout import ParsedOptOuts, parse_optout_file
from tre.data._pipeline import EngineLimits, ExtractCounts, check_source_columns, run_extract, sha256_file
from tre.data._plan import ExtractPlan, OutputColumn, Transform, plan_extract, transform_for
from tre.data._provision import DataServices, import_optouts, provision_project, stale_projects
from tre.data._synthetic import SyntheticFiles, episodes_table, write_demo_data

__all__ = [
    "DataServices",
    "EngineLimits",
    "ExtractCounts",
    "ExtractPlan",
    "KeyProvider",
    "OutputColumn",
    "ParsedOptOuts",
    "PseudonymKey",
    "SyntheticFiles",
    "Transform",
    "check_source_columns",
    "episodes_table",
    "hmac_pads",
    "import_optouts",
    "parse_optout_file",
    "plan_extract",
    "provision_project",
    "pseudonym",
    "run_extract",
    "sha256_file",
    "stale_projects",
    "transform_for",
    "write_demo_data",
]

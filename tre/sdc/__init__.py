"""Statistical disclosure control for researchers: tables and models checked before they reach the airlock.

``crosstab`` and ``pivot_table`` return what pandas returns, plus per-cell evidence (the records are grouped once,
and the table and its evidence both come from that grouping), the outcome of every rule for every cell, an overall
status and, if asked, suppression with secondary suppression. ``ols``, ``logit`` and ``probit`` fit statsmodels
formulas and check their residual degrees of freedom. Rules default to ACRO's (SACRO project); ``load_rules`` reads
a policy file.
"""

from tre.sdc._acro import AcroOutput, read_acro_results
from tre.sdc._check_files import FileReport, check_files, check_paths
from tre.sdc._identifiers import Finding, scan_text
from tre.sdc._output import sidecar_path, verify_saved
from tre.sdc._regression import ModelCheck, check_dof, logit, ols, probit
from tre.sdc._rules import DEFAULT_RULES, RuleSet, load_rules
from tre.sdc._tables import CheckedTable, crosstab, pivot_table

__all__ = [
    "DEFAULT_RULES",
    "AcroOutput",
    "CheckedTable",
    "FileReport",
    "Finding",
    "ModelCheck",
    "RuleSet",
    "check_dof",
    "check_files",
    "check_paths",
    "crosstab",
    "load_rules",
    "logit",
    "ols",
    "pivot_table",
    "probit",
    "read_acro_results",
    "scan_text",
    "sidecar_path",
    "verify_saved",
]

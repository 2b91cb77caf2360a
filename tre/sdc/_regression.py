"""Regressions with the residual degrees-of-freedom check (statsmodels is imported only when one is fitted)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tre.sdc._rules import DEFAULT_RULES, RuleSet


@dataclasses.dataclass(frozen=True)
class ModelCheck:
    """The outcome of the minimum residual degrees-of-freedom rule for one fitted model."""

    rule: str
    parameters: dict[str, Any]
    dof: float
    status: str
    reason: str


def check_dof(fitted: Any, rules: RuleSet = DEFAULT_RULES) -> ModelCheck:
    """Fail a model with fewer residual degrees of freedom than ``min_dof`` (it would be close to a lookup table)."""
    dof = float(fitted.df_resid)
    fail = dof < rules.min_dof
    reason = f"{dof:g} residual degrees of freedom, fewer than {rules.min_dof}" if fail else ""
    return ModelCheck("min_dof", {"min_dof": rules.min_dof}, dof, "fail" if fail else "pass", reason)


def _fit(method: str, formula: str, data: Any, rules: RuleSet, **fit_options: Any) -> tuple[Any, ModelCheck]:
    import statsmodels.formula.api as smf  # type: ignore[import-untyped]

    fitted = getattr(smf, method)(formula, data).fit(**fit_options)
    return fitted, check_dof(fitted, rules)


def ols(formula: str, data: Any, *, rules: RuleSet = DEFAULT_RULES) -> tuple[Any, ModelCheck]:
    """Ordinary least squares (a statsmodels formula) and its degrees-of-freedom check."""
    return _fit("ols", formula, data, rules)


def logit(formula: str, data: Any, *, rules: RuleSet = DEFAULT_RULES) -> tuple[Any, ModelCheck]:
    """Logistic regression and its degrees-of-freedom check."""
    return _fit("logit", formula, data, rules, disp=0)


def probit(formula: str, data: Any, *, rules: RuleSet = DEFAULT_RULES) -> tuple[Any, ModelCheck]:
    """Probit regression and its degrees-of-freedom check."""
    return _fit("probit", formula, data, rules, disp=0)

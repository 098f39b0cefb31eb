"""squeezelab.checks: the ``pytest --compress-budget`` plugin and its budget model.

Light to import (no torch): the plugin loads in every pytest run of a project
that has squeezelab installed.
"""

from squeezelab.checks.budget import BUDGET_ALIASES, BUDGET_KEYS, Budget, BudgetError, load_budgets
from squeezelab.checks.verdict import Figure, Verdict, judge

__all__ = ["Budget", "BudgetError", "BUDGET_KEYS", "BUDGET_ALIASES", "load_budgets", "Figure", "Verdict", "judge"]

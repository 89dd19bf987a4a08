"""`ecdc eval`'s old path: `evaluate`, `EvalOptions` and the report now live in evaluation/."""
from .evaluation.report import EvalOptions, Report, Row, evaluate

__all__ = ["evaluate", "EvalOptions", "Report", "Row"]

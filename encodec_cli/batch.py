"""The batch API's old path: `plan`, `run_batch` and `FileResult` now live in jobs/."""
from .jobs.plan import plan
from .jobs.run import run_batch
from .jobs.task import FileResult

__all__ = ["plan", "run_batch", "FileResult"]

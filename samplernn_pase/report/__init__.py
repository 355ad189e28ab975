"""Static HTML reports: one page per experiment and a page comparing experiments."""

from .pages import write_comparison, write_report

__all__ = ["write_report", "write_comparison"]

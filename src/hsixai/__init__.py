"""hsixai: patch-size selection for hyperspectral crop classification by explanation consistency."""

__version__ = "0.1.0"

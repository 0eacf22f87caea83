"""Pricing (hardware x runtime): the cost model declared once, the catalog of GPUs and runtime profiles, what-if
scenarios, the priced points they record and read, and the calibration of runtime profiles to measurements."""

"""Prepared corpus + experiment -> every fold searched, trained and tested -> results tables, plots, predictions."""

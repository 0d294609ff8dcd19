"""Metrics, attacks and reports (issue 3 onward); answer probability lives here already."""

"""The one place numbers are formatted."""

import pandas as pd

from analysis.reports.text import mean_pm, series_pm


def test_mean_pm_and_series_pm():
    assert mean_pm(0.5, 0.0123, 100) == "50.0 ± 1.2"
    assert mean_pm(0.5, float("nan"), 100) == "50.0"
    assert mean_pm(1.23456, 0.001, 1.0, 3) == "1.235 ± 0.001"
    assert series_pm(pd.Series([0.1, 0.3]), 100) == "20.0 ± 14.1"  # sample std
    assert series_pm(pd.Series([0.25]), 100) == "25.0"

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def standard_v1_report():
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return analyze(load_profile("dsocr-standard-v1"))


@pytest.fixture(scope="session")
def standard_ocr2_report():
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return analyze(load_profile("dsocr-standard-ocr2"))

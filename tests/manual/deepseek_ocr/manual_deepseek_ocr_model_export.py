"""Export a report with the command line as JSON and as YAML, and check both load back into AnalyticModelReport.

    python tests/manual/deepseek_ocr/manual_deepseek_ocr_model_export.py [--profile dsocr-standard-v1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="dsocr-standard-v1")
    parser.add_argument("--keep", type=pathlib.Path, help="write the files here instead of a temporary folder")
    args = parser.parse_args(argv)

    from analyzer.report import dumps_json, load_report

    cli = str(pathlib.Path(sys.executable).parent / "dsocr-registry")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or pathlib.Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        reports = {}
        for suffix in ("json", "yaml"):
            path = folder / f"{args.profile}.{suffix}"
            done = subprocess.run([cli, "analyze", "--workload", args.profile, "--out", str(path), "--quiet"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(f"FAIL: analyze -> {path.name}: {done.stderr.strip()}")
                return 1
            reports[suffix] = load_report(path)
            print(f"{path.name}: {path.stat().st_size:,} bytes, report {reports[suffix].report_id}, "
                  f"{len(reports[suffix].modules)} modules, {len(reports[suffix].module_metrics)} module metrics")
        if reports["json"] != reports["yaml"] or dumps_json(reports["json"]) != dumps_json(reports["yaml"]):
            print("FAIL: the JSON and YAML exports differ")
            return 1
    print("ok: JSON and YAML exports load back into the same AnalyticModelReport")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A longer fuzz campaign over every input format, with the strategies and checks of the test suite.

    python scripts/fuzz_campaign.py                      # 2 minutes per format, DuckDB
    python scripts/fuzz_campaign.py --minutes 1 --formats report-json,sql
    DSOCR_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test python scripts/fuzz_campaign.py

Each input is checked as in tests/test_fuzz_inputs.py (accepted, or refused with one line of at most 300
characters naming the file, within 5 s, nothing of it stored, the good report beside it stored, the same verdict
on every backend). Prints, per format, the inputs tried, accepted and refused, and the failed checks (with the
first few inputs that failed them), then the campaign's peak memory. Exit 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

FORMATS = ("report-json", "report-yaml", "hardware", "runtime", "profile", "scenario", "serving", "measurements",
           "sql")


class BudgetSpent(Exception):
    pass


def run_format(name: str, strategy, check, seconds: float) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings

    stats = {"format": name, "tried": 0, "accepted": 0, "refused": 0, "failed": 0, "examples": []}
    ends = time.monotonic() + seconds

    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value):
        if time.monotonic() > ends:
            raise BudgetSpent
        stats["tried"] += 1
        try:
            stats[check(value)] += 1
        except Exception as exc:  # a failed check: count it, keep going
            stats["failed"] += 1
            if len(stats["examples"]) < 3:
                stats["examples"].append((repr(value)[:200], f"{type(exc).__name__}: {str(exc)[:300]}"))

    try:
        run()
    except BudgetSpent:
        pass
    except BaseException as exc:  # Hypothesis reports BudgetSpent wrapped when it replays
        if "BudgetSpent" not in repr(exc):
            raise
    return stats


def registries(folder: pathlib.Path, postgres_url: str | None) -> tuple[list[str], list[str]]:
    """Registry URLs (DuckDB, and PostgreSQL in a schema of its own) and the schemas to drop afterwards."""
    import sqlalchemy as sa

    from tests.helpers import run_command

    urls = [str(folder / "campaign.duckdb")]
    schemas = []
    if postgres_url:
        schema = f"fuzz_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg"))
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engine.dispose()
        schemas.append(schema)
        urls.append(sa.make_url(postgres_url).set(drivername="postgresql+psycopg").update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False))
    for url in urls:
        result = run_command(["db", "upgrade", "--db", url])
        if result.exit_code != 0:
            raise SystemExit(result.output)
    return urls, schemas


def main() -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="time per format (default 2)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of: {', '.join(FORMATS)}")
    args = parser.parse_args()
    chosen = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = set(chosen) - set(FORMATS)
    if unknown:
        parser.error(f"unknown format(s): {', '.join(sorted(unknown))}")

    from hypothesis import strategies as st

    from analyzer.analysis import analyze
    from analyzer.workload import load_profile
    from tests import fuzzing
    from tests.helpers import run_command

    folder = pathlib.Path(tempfile.mkdtemp(prefix="fuzz-campaign-"))
    postgres_url = os.environ.get("DSOCR_TEST_POSTGRES_URL")
    urls, schemas = registries(folder, postgres_url)
    print(f"backends: {', '.join('postgresql' if u.startswith('postgresql') else 'duckdb' for u in urls)}; "
          f"{args.minutes:g} min per format; files in {folder}", flush=True)
    small = None
    if any(f.startswith("report") for f in chosen):
        small = fuzzing.small_report(analyze(load_profile("dsocr-standard-v1")))
        seed, _ = fuzzing.good_report_file(small, folder, "seed")
        for url in urls:
            run_command(["ingest", str(seed), "--db", url])
    documents = fuzzing.base_documents()
    serial = iter(range(10**9))
    results = []
    for name in chosen:
        if name.startswith("report"):
            fmt = name.split("-")[1]
            strategy = fuzzing.mutated_file(small, fmt, reidentify=True)

            def check(raw, fmt=fmt):
                return fuzzing.check_report_file(raw, f".{fmt}", folder, small, f"{fmt}-{next(serial)}", urls)
        elif name in ("hardware", "runtime"):
            strategy = fuzzing.mutated_file(documents[name], "yaml")

            def check(raw, kind=name):
                return fuzzing.check_catalog_file(raw, kind, folder, urls)
        elif name == "sql":
            strategy = st.sampled_from(fuzzing.SQL_QUERIES).flatmap(fuzzing.mutated_text)

            def check(raw):
                return fuzzing.check_sql_file(raw, folder, urls)
        else:
            fmt = "json" if name == "measurements" else "yaml"
            strategy = fuzzing.mutated_file(documents[name], fmt)
            read, errors = fuzzing.READERS[name], fuzzing.reader_errors()[name]
            valid = folder / f"valid-{name}.{fmt}"
            valid.write_bytes(fuzzing.dump(documents[name], fmt))
            read(valid)

            def check(raw, name=name, fmt=fmt, read=read, errors=errors):
                path = folder / f"fuzzed-{name}.{fmt}"
                path.write_bytes(raw)
                return fuzzing.check_library_error(read, path, errors)
        stats = run_format(name, strategy, check, args.minutes * 60)
        results.append(stats)
        print(f"{name:13} tried {stats['tried']:6,}  accepted {stats['accepted']:6,}  refused {stats['refused']:6,}  "
              f"failed {stats['failed']:4,}", flush=True)
        for value, problem in stats["examples"]:
            print(f"    {problem}\n      input: {value}")
    total = {key: sum(s[key] for s in results) for key in ("tried", "accepted", "refused", "failed")}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'total':13} tried {total['tried']:6,}  accepted {total['accepted']:6,}  refused {total['refused']:6,}  "
          f"failed {total['failed']:4,}; peak memory of the campaign {peak_mb:,.0f} MB")
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    if schemas:
        import sqlalchemy as sa

        engine = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg"))
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
    sys.stdout.flush()
    os._exit(1 if total["failed"] else 0)  # skip DuckDB's teardown reports in a process that loaded torch


if __name__ == "__main__":
    main()

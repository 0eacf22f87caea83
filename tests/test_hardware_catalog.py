"""The GPU catalog: datasheet figures with their sources, sparse figures refused, the fp8 rate, and the price per
GPU-hour (the shipped dated example, or the user's own, which `db upgrade` keeps)."""

import math
import re
import textwrap

import pytest
import yaml

from registry.pricing import catalog
from registry.store.db import RegistryError
from tests.helpers import REPO, rows, run_command

SHIPPED = yaml.safe_load((REPO / "registry/data/hardware.yaml").read_text())
NEW_GPUS = {"b200", "h100-pcie", "h20", "l4", "a10", "l40", "rtx-5090", "rtx-pro-6000", "mi300x", "mi325x"}
NO_FP8 = {"a100-40g", "a100-80g", "a10"}


def _sparse_case(gpu: catalog.KnownGpu):
    return pytest.param(gpu, id=gpu.family)


# -- the shipped catalog ----------------------------------------------------------------------------------------

def test_every_catalog_entry_has_a_source_and_positive_figures():
    names = {entry["name"] for entry in SHIPPED}
    assert NEW_GPUS | {"h100-sxm", "h200", "a100-40g", "a100-80g", "l40s", "rtx-4090"} <= names
    for entry in SHIPPED:
        name = entry["name"]
        assert isinstance(entry.get("source"), str) and len(entry["source"]) > 20, name
        for key in ("dense_bf16_tflops", "memory_tb_per_s", "memory_gb"):
            assert entry[key] > 0 and math.isfinite(entry[key]), (name, key)
        if name in NO_FP8:
            assert "dense_fp8_tflops" not in entry, name
        else:
            assert entry["dense_bf16_tflops"] <= entry["dense_fp8_tflops"] <= 2.5 * entry["dense_bf16_tflops"], name
        assert entry.get("interconnect") and entry["interconnect_gb_per_s"] > 0, name
        if "example_usd_per_hour" in entry:  # a dated example with its source
            assert entry["example_usd_per_hour"] > 0, name
            assert entry["example_price_source"].strip(), name
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["example_price_date"]), name
    assert "examples, not truth" in (REPO / "registry/data/hardware.yaml").read_text()
    parsed = catalog.parse_hardware(SHIPPED, "hardware.yaml")  # every check of the loader passes
    assert len(parsed) == len(SHIPPED)


def test_existing_gpus_keep_their_figures():
    """Adding GPUs changes no figure of the six before them (every existing answer stays the same)."""
    by_name = {row["name"]: row for row in catalog.parse_hardware(SHIPPED, "hardware.yaml")}
    assert {name: (by_name[name]["peak_bf16_flops_per_s"], by_name[name]["memory_bandwidth_bytes_per_s"],
                   by_name[name]["memory_bytes"]) for name in
            ("h100-sxm", "h200", "a100-40g", "a100-80g", "l40s", "rtx-4090")} == {
        "h100-sxm": (989 * 1e12, 3.35 * 1e12, 80_000_000_000), "h200": (989 * 1e12, 4.8 * 1e12, 141_000_000_000),
        "a100-40g": (312 * 1e12, 1.555 * 1e12, 40_000_000_000), "a100-80g": (312 * 1e12, 2.039 * 1e12, 80_000_000_000),
        "l40s": (362 * 1e12, 0.864 * 1e12, 48_000_000_000), "rtx-4090": (165.2 * 1e12, 1.008 * 1e12, 24_000_000_000)}


def test_shipped_catalog_is_stored_with_fp8_interconnect_and_example_prices(registry_url):
    stored = {r[0]: r[1:] for r in rows(registry_url, "SELECT name, peak_fp8_flops_per_s, interconnect, "
                                                      "interconnect_bytes_per_s, usd_per_hour, price_source FROM hardware")}
    assert len(stored) == len(SHIPPED)
    assert stored["h100-sxm"] == (1979e12, "NVLink 4, 900 GB/s", 900e9, 3.49,
                                  "example: RunPod Secure Cloud on-demand, runpod.io/pricing, 2026-09-25")
    assert stored["a100-80g"][0] is None and stored["a10"][0] is None
    assert stored["l40"][:1] == (362e12,) and stored["mi300x"][0] == pytest.approx(2614.9e12)
    assert stored["h20"][3:] == (None, None)  # no example price: none


# -- sparse figures and the fp8 rate ------------------------------------------------------------------------------

def _gpu_file(tmp_path, text: str):
    path = tmp_path / "my-gpus.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("gpu", [_sparse_case(g) for g in catalog.KNOWN_GPUS])
def test_known_sparse_pairs_are_refused(gpu):
    entry = {"name": "mine", "display_name": gpu.family, "memory_tb_per_s": 1, "memory_gb": 24,
             "dense_bf16_tflops": gpu.sparse_bf16}
    with pytest.raises(RegistryError) as refused:
        catalog.parse_hardware([entry], "my-gpus.yaml")
    assert str(refused.value) == (
        f"my-gpus.yaml: hardware 'mine': dense_bf16_tflops: {gpu.sparse_bf16:g} TFLOP/s is the 2:4-sparse figure of "
        f"the {gpu.family}; its dense figure is {gpu.dense_bf16:g} (datasheets print the sparse one with an asterisk)")
    entry["dense_bf16_tflops"] = gpu.dense_bf16
    if gpu.sparse_fp8 is None:
        assert catalog.parse_hardware([entry], "my-gpus.yaml")
        return
    entry["dense_fp8_tflops"] = gpu.sparse_fp8
    with pytest.raises(RegistryError, match=rf"dense_fp8_tflops: {gpu.sparse_fp8:g} TFLOP/s is the 2:4-sparse "
                                            rf"figure of the {re.escape(gpu.family)}; its dense figure is "
                                            rf"{gpu.dense_fp8:g} "):
        catalog.parse_hardware([entry], "my-gpus.yaml")
    entry["dense_fp8_tflops"] = gpu.dense_fp8  # the dense pair is fine
    assert catalog.parse_hardware([entry], "my-gpus.yaml")[0]["peak_fp8_flops_per_s"] == gpu.dense_fp8 * 1e12


def test_sparse_check_tells_the_l40_from_the_l40s():
    """362 is the L40S's dense bf16 rate and (to 0.1) the L40's sparse one: the name decides."""
    l40s = {"name": "l40s-mine", "dense_bf16_tflops": 362, "memory_tb_per_s": 0.864, "memory_gb": 48}
    assert catalog.parse_hardware([l40s], "f.yaml")
    with pytest.raises(RegistryError, match="is the 2:4-sparse figure of the NVIDIA L40; its dense figure is 181.05"):
        catalog.parse_hardware([dict(l40s, name="l40-mine")], "f.yaml")
    assert catalog.parse_hardware([dict(l40s, name="my-gpu")], "f.yaml")  # an unknown GPU: no pair to check


@pytest.mark.parametrize("fp8, problem", [(900, "must be between the dense bf16 rate (989) and 2.5x it (2472.5)"),
                                          (3000, "must be between the dense bf16 rate (989) and 2.5x it (2472.5)")])
def test_fp8_rate_between_the_bf16_rate_and_2_5x_it(fp8, problem):
    entry = {"name": "x", "dense_bf16_tflops": 989, "dense_fp8_tflops": fp8, "memory_tb_per_s": 3, "memory_gb": 80}
    with pytest.raises(RegistryError, match=re.escape(f"f.yaml: hardware 'x': dense_fp8_tflops: {fp8:g} TFLOP/s "
                                                      f"{problem}")):
        catalog.parse_hardware([entry], "f.yaml")


# -- bad input to `hardware add` and `hardware price`: one line, exit 2, nothing written --------------------------

GOOD = "name: my-gpu\ndense_bf16_tflops: 100\nmemory_tb_per_s: 2\nmemory_gb: 80\n"
BAD_FILES = {
    "zero figure": (GOOD.replace("memory_gb: 80", "memory_gb: 0"), "memory_gb must be"),
    "negative fp8": (GOOD + "dense_fp8_tflops: -200\n", "dense_fp8_tflops must be"),
    "sparse figure": ("name: h100-mine\ndisplay_name: NVIDIA H100 SXM5\ndense_bf16_tflops: 1979\nmemory_tb_per_s: 3.35\n"
                      "memory_gb: 80\n", "dense_bf16_tflops: 1979 TFLOP/s is the 2:4-sparse figure of the NVIDIA H100 "
                                         "SXM; its dense figure is 989"),
    "fp8 below bf16": (GOOD + "dense_fp8_tflops: 50\n", "dense_fp8_tflops: 50 TFLOP/s must be between"),
    "negative price": (GOOD + "usd_per_hour: -1\n", "usd_per_hour must be in (0, 10000], got -1"),
    "zero price": (GOOD + "usd_per_hour: 0\n", "usd_per_hour must be in (0, 10000], got 0"),
    "NaN price": (GOOD + "usd_per_hour: .nan\n", "usd_per_hour: non-finite number nan"),
    "inf price": (GOOD + "usd_per_hour: .inf\n", "usd_per_hour: non-finite number inf"),
    "text price": (GOOD + "usd_per_hour: cheap\n", "usd_per_hour must be a number, got 'cheap'"),
    "example without date": (GOOD + "example_usd_per_hour: 2\nexample_price_source: a page\n",
                             "example_price_date: missing"),
    "example bad date": (GOOD + "example_usd_per_hour: 2\nexample_price_source: a page\nexample_price_date: '2026-13-01'\n",
                         "example_price_date: must be a date YYYY-MM-DD, got '2026-13-01'"),
    "empty interconnect": (GOOD + "interconnect: ''\n", "interconnect: must be non-empty text"),
    "zero interconnect": (GOOD + "interconnect_gb_per_s: 0\n", "interconnect_gb_per_s must be"),
    "shipped GPU priced in a file": (
        "name: a10\ndisplay_name: NVIDIA A10 24GB\ndense_bf16_tflops: 125\nmemory_tb_per_s: 0.6\nmemory_gb: 24\n"
        "interconnect: PCIe Gen4 x16, 64 GB/s\ninterconnect_gb_per_s: 64\nsource: NVIDIA A10 Tensor Core GPU datasheet "
        "(125 TFLOP/s dense bf16, 250 sparse; no fp8)\nusd_per_hour: 1\n",
        "a10: usd_per_hour: a10 is a shipped GPU; set your price with `dsocr-registry hardware price a10 USD`"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_hardware_add_refuses_bad_figures_and_prices(case, registry_url, tmp_path):
    text, expected = BAD_FILES[case]
    before = rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name")
    path = _gpu_file(tmp_path, text)
    result = run_command(["hardware", "add", str(path), "--db", registry_url])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"dsocr-registry: error: {path}: ") and expected in line, line
    assert rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name") == before


@pytest.mark.parametrize("argument, expected", [
    ("-1", "USD must be in (0, 10000], got -1.0"), ("0", "USD must be in (0, 10000], got 0.0"),
    ("nan", "USD must be a number, got nan"), ("inf", "USD must be a number, got inf"),
    ("-inf", "USD must be a number, got -inf"), ("ten", "USD must be a number, got 'ten'"),
    ("20000", "USD must be in (0, 10000], got 20000.0")])
def test_hardware_price_refuses_a_bad_price(argument, expected, registry_url, tmp_path):
    before = rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name")
    result = run_command(["hardware", "price", "h100-sxm", argument, "--db", registry_url])
    assert result.exit_code == 2
    assert result.output.strip() == f"dsocr-registry: error: hardware price h100-sxm: {expected}", result.output
    assert rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name") == before
    fresh = tmp_path / "fresh.duckdb"  # refused before a registry is opened: none is created
    assert run_command(["hardware", "price", "h100-sxm", argument, "--db", str(fresh)]).exit_code == 2
    assert not fresh.exists()


def test_hardware_price_refuses_an_unknown_gpu_and_a_missing_price(registry_url):
    before = rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name")
    unknown = run_command(["hardware", "price", "h1000", "2", "--db", registry_url])
    assert unknown.exit_code == 2
    assert unknown.output.startswith("dsocr-registry: error: unknown hardware 'h1000' (did you mean 'h200'?); known: ")
    for args in (["h100-sxm"], ["h100-sxm", "2", "--clear"]):
        result = run_command(["hardware", "price", *args, "--db", registry_url])
        assert result.exit_code == 2 and "give a price in USD or --clear (not both)" in result.output
    assert rows(registry_url, "SELECT name, usd_per_hour, price_source FROM hardware ORDER BY name") == before


# -- a user's own price -------------------------------------------------------------------------------------------

def _price(url, name):
    return rows(url, "SELECT usd_per_hour, price_source FROM hardware WHERE name = :n", n=name)[0]


def test_hardware_price_round_trip_survives_db_upgrade(registry_url):
    example = (3.49, "example: RunPod Secure Cloud on-demand, runpod.io/pricing, 2026-09-25")
    assert _price(registry_url, "h100-sxm") == example
    result = run_command(["hardware", "price", "H100-SXM", "2.25", "--db", registry_url])
    assert result.exit_code == 0 and result.output.strip() == "h100-sxm: $2.25 per GPU-hour (user)", result.output
    assert _price(registry_url, "h100-sxm") == (2.25, "user")
    shown = run_command(["hardware", "show", "h100-sxm", "--db", registry_url]).output
    assert "  price           $2.25 per GPU-hour (user)" in shown and "  dense fp8       1,979.0 TFLOP/s" in shown
    listed = run_command(["hardware", "list", "--db", registry_url]).output
    assert re.search(r"h100-sxm .* 1979 .* NVLink 4, 900 GB/s +2\.25 +user +shipped", listed), listed

    upgraded = run_command(["db", "upgrade", "--db", registry_url])  # seeds the catalog again: the user's price stays
    assert upgraded.exit_code == 0, upgraded.output
    assert _price(registry_url, "h100-sxm") == (2.25, "user")
    assert _price(registry_url, "h200")[1].startswith("example: ")

    cleared = run_command(["hardware", "price", "h100-sxm", "--clear", "--db", registry_url])
    assert cleared.exit_code == 0 and cleared.output.strip() == f"h100-sxm: $3.49 per GPU-hour ({example[1]})"
    assert _price(registry_url, "h100-sxm") == example
    assert run_command(["hardware", "price", "l4", "1.5", "--db", registry_url]).exit_code == 0
    none = run_command(["hardware", "price", "l4", "--clear", "--db", registry_url])  # no example: no price
    assert none.output.strip() == "l4: no price" and _price(registry_url, "l4") == (None, None)
    assert "price           none" in run_command(["hardware", "show", "l4", "--db", registry_url]).output


def test_hardware_add_takes_a_users_price(registry_url, tmp_path):
    path = _gpu_file(tmp_path, GOOD + "dense_fp8_tflops: 200\ninterconnect: PCIe Gen5 x16, 128 GB/s\n"
                                      "interconnect_gb_per_s: 128\nusd_per_hour: 0.95\nsource: my bench\n")
    result = run_command(["hardware", "add", str(path), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert rows(registry_url, "SELECT peak_fp8_flops_per_s, interconnect, interconnect_bytes_per_s, usd_per_hour, "
                              "price_source, origin FROM hardware WHERE name = 'my-gpu'") == [
        (200e12, "PCIe Gen5 x16, 128 GB/s", 128e9, 0.95, "user", "user")]
    assert run_command(["db", "upgrade", "--db", registry_url]).exit_code == 0
    assert _price(registry_url, "my-gpu") == (0.95, "user")


def test_readme_hardware_file_is_accepted(registry_url, tmp_path):
    """The README's `hardware add` example, every key of a catalog entry, adds as it is."""
    text = (REPO / "docs" / "capacity.md").read_text()
    block = re.search(r"```yaml\n([ \t]*# docs/examples/my-gpus\.yaml.*?)```", text, re.DOTALL)
    assert block, "README: the hardware add example (a ```yaml block starting '# docs/examples/my-gpus.yaml')"
    example = textwrap.dedent(block.group(1))
    # the file the README's `hardware add` line names holds the example as shown
    assert (REPO / "docs" / "examples" / "my-gpus.yaml").read_text() == example
    keys = set().union(*(entry.keys() for entry in yaml.safe_load(example)))
    assert keys == catalog.HARDWARE_KEYS
    path = _gpu_file(tmp_path, example)
    result = run_command(["hardware", "add", str(path), "--db", registry_url])
    assert result.exit_code == 0, result.output


# -- fp8 on a GPU without an fp8 rate --------------------------------------------------------------------------------

def test_require_fp8(registry_url):
    from registry.store.db import Registry

    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            h100, _ = catalog.resolve_hardware(conn, "h100-sxm")
            a100, _ = catalog.resolve_hardware(conn, "a100-80g")
            assert catalog.require_fp8(conn, h100) == 1979e12
            with pytest.raises(RegistryError) as refused:
                catalog.require_fp8(conn, a100)
            assert str(refused.value) == "GPU a100-80g has no fp8 tensor rate in the catalog: price it in bf16"
    finally:
        registry.dispose()

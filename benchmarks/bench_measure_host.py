"""Whether two runs of `measure-host --quick` on this machine agree within their printed spreads.

A timing property of a quiet machine (on a machine shared with other work the CPU's speed moves between runs, and
the speed kernels of the two runs show by how much), so it is a benchmark that prints, not a test.

Run: python benchmarks/bench_measure_host.py
"""

from __future__ import annotations


def figures(document):
    yield "python_speed_kernel_us", document["python_speed_kernel_us"]
    yield "render_per_megapixel_ms", document["render_per_megapixel_ms"]
    yield from document["costs"].items()
    for variant, modes in document["preprocess"].items():
        for mode, terms in modes.items():
            for term, value in terms.items():
                yield f"{variant} {mode} {term}", value


def main() -> None:
    from registry.serving.measure_host import measure_host

    first, second = (measure_host(quick=True, with_vllm=False) for _ in range(2))
    apart = []
    count = 0
    for (where, a), (_, b) in zip(figures(first), figures(second)):
        count += 1
        if abs(a["value"] - b["value"]) > a["spread"] + b["spread"]:
            apart.append(f"  {where}: {a['value']} ± {a['spread']} vs {b['value']} ± {b['spread']}")
    kernels = [run["python_speed_kernel_us"]["value"] for run in (first, second)]
    print(f"two quick runs: {count - len(apart)} of {count} figures agree within their spreads "
          f"(speed kernels {kernels[0]} and {kernels[1]} us)")
    print("\n".join(apart))


if __name__ == "__main__":
    main()

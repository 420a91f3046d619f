"""Tables and plots from a results file: medians of the repetitions, ratios to the floor.

``write(results, folder)`` writes ``folder/latest.md`` (or ``quick.md``) and, with
``plots=True``, ``docs/img/bench-*.png`` (matplotlib, Agg backend), and returns the
Markdown. The targets are issue 9's; each row says met or missed, and by how much.
"""

from __future__ import annotations

import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "docs" / "img"
PAGE = HERE.parent / "docs" / "performance.md"
BEGIN = "<!-- bench results: written by python -m bench; do not edit by hand -->"
END = "<!-- end of bench results -->"
FLOOR = "echo-asgi/v2-json/-"
ASYNCIO_FLOOR = "echo-asyncio/v2-json/-"
MLSERVERS = ("mlserver-default", "mlserver-pw0")
TARGET_FORMATS = ("v2-json", "v2-binary", "text", "wxf")

SERVER_NAMES = {
    "echo-asyncio": "asyncio echo (floor)",
    "echo-asgi": "raw ASGI echo, uvicorn (floor)",
    "original": "original design",
    "mlserver-default": "MLServer, defaults",
    "mlserver-pw0": "MLServer, parallel_workers=0",
    "mlbridge": "mlbridge",
}
FORMAT_NAMES = {
    "v2-json": "V2 JSON",
    "v2-binary": "V2 binary",
    "text": "Mathematica text",
    "wxf": "WXF",
    "gradient": "gradient (WXF)",
}


def label(config: str) -> str:
    server, fmt, model = config.split("/")
    if server.startswith("echo"):
        return SERVER_NAMES[server]
    if server == "original":
        return "original design (text, HTTP/1.0)"
    name = f"{SERVER_NAMES[server]}, {FORMAT_NAMES.get(fmt, fmt)}"
    return name + (" — CNN" if model == "mnist-cnn" else "")


def median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None, digits: int = 1) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.{digits}f}×"


# ---- tables -----------------------------------------------------------------------------


def sequential_table(results: dict) -> list[str]:
    rows = results["sequential"]
    floor_p50 = median(rows[FLOOR], "p50_us")
    floor_cpu = median(rows[FLOOR], "cpu_us")
    lines = [
        "| server, format (model `mnist` unless CNN) | p50 µs | p90 µs | p99 µs | p50 ÷ floor "
        "| req/s | server CPU µs/req | CPU ÷ floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in rows.items():
        p50, cpu = median(runs, "p50_us"), median(runs, "cpu_us")
        lines.append(
            f"| {label(name)} | {fmt(p50)} | {fmt(median(runs, 'p90_us'))} | "
            f"{fmt(median(runs, 'p99_us'))} | {ratio(p50, floor_p50, 2)} | "
            f"{fmt(median(runs, 'rps'))} | {fmt(cpu)} | {ratio(cpu, floor_cpu)} |"
        )
    return lines


def inprocess_table(results: dict) -> list[str]:
    bulk = results["meta"]["plan"]["bulk"]
    lines = [
        f"| engine, in this process | one image p50 µs | p99 µs | {bulk:,} images in one call, s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, runs in results.get("inprocess", {}).items():
        lines.append(
            f"| {name} | {fmt(median(runs, 'p50_us'), 1)} | {fmt(median(runs, 'p99_us'), 1)} | "
            f"{fmt(median(runs, 'bulk_s'), 4)} |"
        )
    return lines


def concurrent_table(results: dict, clients: str) -> list[str]:
    rows = results["concurrent"][clients]
    floor_rps = median(rows[FLOOR], "rps")
    lines = [
        f"| {clients} clients, server, format | req/s | ÷ floor | p50 µs | p99 µs | errors "
        "| mean batch | server CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in rows.items():
        batch_keys = [k for k in runs[0] if k.startswith("batch_")]
        batch = median(runs, batch_keys[0]) if batch_keys else None
        errors = sum(run["errors"] for run in runs)
        lines.append(
            f"| {label(name)} | {fmt(median(runs, 'rps'))} | "
            f"{ratio(median(runs, 'rps'), floor_rps, 2)} | {fmt(median(runs, 'p50_us'))} | "
            f"{fmt(median(runs, 'p99_us'))} | {errors} | {fmt(batch, 1)} | "
            f"{fmt(median(runs, 'cpu_us'))} |"
        )
    return lines


def bulk_table(results: dict) -> list[str]:
    rows = results["bulk"]
    count = results["meta"]["plan"]["bulk"]
    floor = median(rows[FLOOR], "seconds")
    onnx = median(results["inprocess"]["onnxruntime/mnist"], "bulk_s")
    lines = [
        f"| {count:,} images in one request | seconds | ÷ floor | ÷ in-process onnxruntime "
        "| MB sent | MB received |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in rows.items():
        seconds = median(runs, "seconds")
        in_process = ratio(seconds, onnx, 0) if not name.startswith("echo") else "–"
        lines.append(
            f"| {label(name)} | {fmt(seconds, 3)} | {ratio(seconds, floor)} | {in_process} | "
            f"{fmt(runs[0]['sent_bytes'] / 1e6, 1)} | {fmt(runs[0]['reply_bytes'] / 1e6, 2)} |"
        )
    parser = results.get("original_parser")
    if parser:
        lines.append(
            f"| original design's parser alone (`ast.literal_eval`), {parser['images']:,} images "
            f"of text, in-process | {fmt(parser['seconds'], 2)} | | | "
            f"{fmt(parser['bytes'] / 1e6, 1)} | (peak memory {fmt(parser['max_rss_mb'])} MB) |"
        )
        if parser.get("mlbridge_seconds"):
            lines.append(
                f"| mlbridge's parser alone (`parse_list`), the same text, in-process | "
                f"{fmt(parser['mlbridge_seconds'], 2)} | | | {fmt(parser['bytes'] / 1e6, 1)} | "
                f"(peak memory {fmt(parser['mlbridge_max_rss_mb'])} MB) |"
            )
    return lines


def resources_table(results: dict) -> list[str]:
    startup = results.get("startup_s", {})
    lines = [
        "| server | start-up to ready, s (median) | RSS idle MB | after per-request load MB "
        "| after the bulk requests MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for server, idle in results["rss_idle_mb"].items():
        start = statistics.median(startup[server]) if server in startup else None
        lines.append(
            f"| {SERVER_NAMES[server]} | {fmt(start, 2)} | {fmt(idle)} | "
            f"{fmt(results['rss_after_load_mb'][server])} | "
            f"{fmt(results['rss_after_bulk_mb'][server])} |"
        )
    return lines


def locust_table(results: dict) -> list[str]:
    rows = results.get("locust", {})
    if not rows:
        return []
    first = next(iter(rows.values()))
    lines = [
        f"| Locust FastHttpUser, {first['users']} users, {first['seconds']} s | req/s | "
        "p50 ms | p99 ms | failures |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {label(name)} | {fmt(row['rps'])} | {fmt(row['p50_ms'], 1)} | "
            f"{fmt(row['p99_ms'], 1)} | {row['failures']} |"
        )
    return lines


# ---- targets ----------------------------------------------------------------------------


def targets(results: dict) -> list[tuple[str, str, bool, str]]:
    """(target, measured, met, margin) for each of issue 9's targets."""
    out = []
    seq = results["sequential"]
    floor = median(seq[FLOOR], "p50_us")
    best_ml = min(median(seq[f"{m}/v2-json/mnist"], "p50_us") for m in MLSERVERS)
    for f in TARGET_FORMATS:
        p50 = median(seq[f"mlbridge/{f}/mnist"], "p50_us")
        x = p50 / floor
        out.append(
            (
                f"1 image, p50, {FORMAT_NAMES[f]}: ≤ 1.5× the raw-ASGI floor",
                f"{p50:.0f} µs = {x:.2f}× ({floor:.0f} µs)",
                x <= 1.5,
                _margin(x, 1.5, lower_is_better=True),
            )
        )
        y = best_ml / p50
        out.append(
            (
                f"1 image, p50, {FORMAT_NAMES[f]}: ≥ 3× faster than MLServer's best",
                f"{y:.2f}× (MLServer {best_ml:.0f} µs)",
                y >= 3,
                _margin(y, 3),
            )
        )
    conc = results["concurrent"].get("8", {})
    cnn = conc.get("mlbridge/v2-json/mnist-cnn")
    if cnn:
        rps = median(cnn, "rps")
        ml = max(MLSERVERS, key=lambda m: median(conc[f"{m}/v2-json/mnist-cnn"], "rps"))
        ml_runs = conc[f"{ml}/v2-json/mnist-cnn"]
        x = rps / median(ml_runs, "rps")
        out.append(
            (
                "8 clients, CNN, V2 JSON: ≥ 3× MLServer's best throughput",
                f"{rps:,.0f} req/s = {x:.2f}× ({median(ml_runs, 'rps'):,.0f})",
                x >= 3,
                _margin(x, 3),
            )
        )
        errors = sum(run["errors"] for run in cnn)
        out.append(("8 clients, CNN: 0 errors", f"{errors}", errors == 0, ""))
        batch = median(cnn, "batch_mnist-cnn")
        out.append(
            ("8 clients, CNN: mean batch size > 1", f"{fmt(batch, 2)}", (batch or 0) > 1, "")
        )
        p99, ml_p99 = median(cnn, "p99_us"), median(ml_runs, "p99_us")
        out.append(
            (
                "8 clients, CNN: p99 no worse than MLServer's",
                f"{p99:,.0f} µs vs {ml_p99:,.0f} µs",
                p99 <= ml_p99,
                _margin(p99 / ml_p99, 1, lower_is_better=True),
            )
        )
    bulk = results["bulk"]
    count = results["meta"]["plan"]["bulk"]
    mine = median(bulk["mlbridge/v2-json/mnist"], "seconds")
    theirs = min(median(bulk[f"{m}/v2-json/mnist"], "seconds") for m in MLSERVERS)
    out.append(
        (
            f"{count:,} images, V2 JSON: ≥ 3× faster than MLServer",
            f"{mine:.3f} s vs {theirs:.3f} s = {theirs / mine:.2f}×",
            theirs / mine >= 3,
            _margin(theirs / mine, 3),
        )
    )
    onnx = median(results["inprocess"]["onnxruntime/mnist"], "bulk_s")
    for f in ("v2-binary", "wxf"):
        seconds = median(bulk[f"mlbridge/{f}/mnist"], "seconds")
        out.append(
            (
                f"{count:,} images, {FORMAT_NAMES[f]}: within 10× of in-process onnxruntime",
                f"{seconds:.4f} s vs {onnx:.4f} s = {seconds / onnx:.1f}×",
                seconds / onnx <= 10,
                _margin(seconds / onnx, 10, lower_is_better=True),
            )
        )
    parser = results.get("original_parser")
    if parser:
        text = median(bulk["mlbridge/text/mnist"], "seconds")
        per_image = parser["seconds"] / parser["images"] * count  # scaled to the same payload
        x = per_image / text
        scaled = "" if parser["images"] == count else f" (scaled from {parser['images']:,})"
        ours = parser.get("mlbridge_seconds")
        if ours:  # parser against parser, the same payload: the target's own terms
            alone = parser["seconds"] / ours
            out.append(
                (
                    f"{parser['images']:,} images, Mathematica text: ≥ 50× faster than the "
                    "original parser (parser against parser)",
                    f"{ours:.2f} s vs {parser['seconds']:.1f} s = {alone:.0f}×",
                    alone >= 50,
                    _margin(alone, 50),
                )
            )
        out.append(
            (
                f"{count:,} images, Mathematica text: ≥ 50× faster than the original parser "
                "(our whole round trip against its parse)",
                f"{text:.2f} s round trip vs {per_image:.1f} s parse{scaled} = {x:.0f}×",
                x >= 50,
                _margin(x, 50),
            )
        )
    rss = results["rss_after_bulk_mb"]["mlbridge"]
    out.append(
        (
            "server RSS after the run ≤ 150 MB",
            f"{rss:.0f} MB (after per-request load: "
            f"{results['rss_after_load_mb']['mlbridge']:.0f} MB)",
            rss <= 150,
            _margin(rss / 150, 1, lower_is_better=True),
        )
    )
    startup = results.get("startup_s", {}).get("mlbridge")
    if startup:
        start = statistics.median(startup)
        out.append(
            (
                "start-up to ready ≤ 1.5 s",
                f"{start:.2f} s",
                start <= 1.5,
                _margin(start / 1.5, 1, lower_is_better=True),
            )
        )
    return out


def _margin(value: float, bound: float, lower_is_better: bool = False) -> str:
    """How far inside the bound, or how far from it."""
    if lower_is_better:
        if value <= bound:
            return f"inside by {(1 - value / bound) * 100:.0f}%"
        return f"{value / bound:.2f}× the bound"
    if value >= bound:
        return f"inside by {(value / bound - 1) * 100:.0f}%"
    return f"short by {(1 - value / bound) * 100:.0f}%"


def targets_table(results: dict) -> list[str]:
    lines = ["| target (issue 9) | measured | met? | margin |", "| --- | --- | --- | --- |"]
    for target, measured, met, margin in targets(results):
        lines.append(f"| {target} | {measured} | {'met' if met else '**missed**'} | {margin} |")
    return lines


def write(results: dict, folder: Path, plots: bool = True) -> str:
    meta = results["meta"]
    plan = meta["plan"]
    sections = [
        f"Run of {meta['date']} ({meta['mode']} plan, {meta.get('seconds', '?')} s), commit "
        f"{meta['commit']} (mlbridge/ digest {meta.get('mlbridge_digest', '?')}); "
        f"{meta['machine']}; Python {meta['python']}; pinning: "
        f"{meta['pinning']}; nice {meta.get('nice', 0)}; medians of {plan['repetitions']} "
        "interleaved repetitions.",
        "",
        "### Targets",
        "",
        *targets_table(results),
        "",
        f"### One image per request, sequential, one keep-alive connection "
        f"({plan['sequential']:,} requests; original design {plan['sequential_fresh']:,}, "
        "a new connection each)",
        "",
        *sequential_table(results),
        "",
        "### The model alone",
        "",
        *inprocess_table(results),
        "",
    ]
    for clients in results["concurrent"]:
        sections += [
            f"### {clients} concurrent clients, {plan['seconds']:g} s each",
            "",
            *concurrent_table(results, clients),
            "",
        ]
    sections += [
        "### One bulk request",
        "",
        *bulk_table(results),
        "",
        "### Start-up and memory",
        "",
        *resources_table(results),
        "",
    ]
    if results.get("locust"):
        sections += ["### Locust (third-party harness)", "", *locust_table(results), ""]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    peer = ", ".join(f"{k} {v}" for k, v in meta.get("mlserver_env", {}).items())
    sections += [
        f"Versions: {versions}. MLServer's virtualenv: {peer}. "
        f"Original design's engine: {meta.get('original_engine', '?')}.",
    ]
    if meta.get("foreign_cpu"):
        sections += ["", f"Other processes on the machine during the run: {meta['foreign_cpu']}."]
    markdown = "\n".join(sections) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("quick.md" if meta["mode"] == "quick" else "latest.md")).write_text(markdown)
    if plots:
        plot(results)
    if meta["mode"] == "full":
        update_performance_page(markdown)
    return markdown


def update_performance_page(markdown: str) -> None:
    """Put a full run's tables into docs/performance.md, between its two markers."""
    if not PAGE.exists():
        return
    page = PAGE.read_text()
    start, end = page.find(BEGIN), page.find(END)
    if 0 <= start < end:
        PAGE.write_text(page[: start + len(BEGIN)] + "\n\n" + markdown + "\n" + page[end:])


# ---- plots ------------------------------------------------------------------------------


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMAGES.mkdir(parents=True, exist_ok=True)
    date = results["meta"]["date"]
    seq = results["sequential"]
    names = list(seq)
    labels = [label(n) for n in names]
    colours = [_colour(n) for n in names]

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    p50 = [median(seq[n], "p50_us") for n in names]
    p99 = [median(seq[n], "p99_us") for n in names]
    ys = range(len(names))
    left.barh(ys, p50, color=colours)
    left.scatter(p99, ys, marker="|", s=200, color="black", label="p99")
    left.set_xscale("log")
    left.set_xlim(left=10)
    left.set_xlabel("µs per request (bars p50, ticks p99; log scale)")
    left.set_yticks(list(ys), labels)
    left.invert_yaxis()
    left.legend(loc="lower right")
    left.set_title("latency, one image per request, sequential")
    cpu = [median(seq[n], "cpu_us") or 0 for n in names]
    right.barh(ys, cpu, color=colours)
    right.set_xscale("log")
    right.set_xlim(left=5)
    right.set_xlabel("server CPU µs per request (log scale)")
    right.set_title("server CPU per request")
    for axis in (left, right):
        axis.grid(axis="x", alpha=0.3, which="both")
    figure.suptitle(f"mlbridge vs peers — {date}")
    figure.tight_layout()
    figure.savefig(IMAGES / "bench-latency.png", dpi=90)
    plt.close(figure)

    levels = list(results["concurrent"])
    conc_names = list(results["concurrent"][levels[0]])
    figure, axis = plt.subplots(figsize=(11, 6.5))
    height = 0.8 / len(levels)
    for index, clients in enumerate(levels):
        rows = results["concurrent"][clients]
        values = [median(rows[n], "rps") for n in conc_names]
        positions = [y + index * height for y in range(len(conc_names))]
        axis.barh(positions, values, height=height, label=f"{clients} clients")
    axis.set_yticks([y + height * (len(levels) - 1) / 2 for y in range(len(conc_names))])
    axis.set_yticklabels([label(n) for n in conc_names])
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("requests per second, one image each (log scale)")
    axis.grid(axis="x", alpha=0.3, which="both")
    axis.legend()
    axis.set_title(f"throughput under concurrent clients — {date}")
    figure.tight_layout()
    figure.savefig(IMAGES / "bench-throughput.png", dpi=90)
    plt.close(figure)

    bulk = results["bulk"]
    bulk_names = list(bulk)
    seconds = [median(bulk[n], "seconds") for n in bulk_names]
    bulk_labels = [label(n) for n in bulk_names]
    onnx = results["inprocess"].get("onnxruntime/mnist")
    if onnx:
        bulk_labels.append("onnxruntime in-process (the model alone)")
        seconds.append(median(onnx, "bulk_s"))
        bulk_names.append("inprocess/-/-")
    figure, axis = plt.subplots(figsize=(11, 6))
    axis.barh(range(len(seconds)), seconds, color=[_colour(n) for n in bulk_names])
    axis.set_yticks(range(len(seconds)), bulk_labels)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel(f"seconds for {results['meta']['plan']['bulk']:,} images in one request (log)")
    axis.grid(axis="x", alpha=0.3, which="both")
    axis.set_title(f"one bulk request — {date}")
    figure.tight_layout()
    figure.savefig(IMAGES / "bench-bulk.png", dpi=90)
    plt.close(figure)


def _colour(name: str) -> str:
    server = name.split("/")[0]
    return {
        "echo-asyncio": "#999999",
        "echo-asgi": "#777777",
        "original": "#d62728",
        "mlserver-default": "#ff7f0e",
        "mlserver-pw0": "#e6a23c",
        "mlbridge": "#1f77b4",
        "inprocess": "#2ca02c",
    }.get(server, "#333333")

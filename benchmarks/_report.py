"""From raw runs to what a reader compares: metrics per run, medians per peer, ratios to the
baselines measured in the same run, the issue's targets, a table, a JSON file and a bar chart.

MB is 10**6 bytes throughout; MiB (2**20) only names sizes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from _peers import BY_NAME, PEERS, SCENARIOS, baseline

HEADLINE = {
    "bulk": "goodput_mbps",
    "lossy": "goodput_mbps",
    "rr": "rt_per_s",
    "connect": "conn_per_s",
    "many": "goodput_mbps",
}
HEADLINE_LABEL = {
    "bulk": "goodput MB/s",
    "lossy": "goodput MB/s",
    "rr": "round trips/s",
    "connect": "connections/s",
    "many": "total goodput MB/s",
}
# (metric key, column header, format) per scenario, after peer and loop.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "bulk": [
        ("goodput_mbps", "MB/s", "{:,.1f}"),
        ("mb_per_cpu_s", "MB/CPU-s", "{:,.1f}"),
        ("cpu_split", "CPU s cli+srv", "{}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_udp", "x udp", "{:.2f}"),
        ("x_tcp", "x tcp", "{:.3f}"),
    ],
    "rr": [
        ("rt_per_s", "RT/s", "{:,.0f}"),
        ("p50_us", "p50 us", "{:,.0f}"),
        ("p99_us", "p99 us", "{:,.0f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_udp", "x udp", "{:.2f}"),
        ("p50_x_tcp", "p50 x tcp", "{:.2f}"),
    ],
    "connect": [
        ("conn_per_s", "conn/s", "{:,.1f}"),
        ("setup_p50_ms", "open+echo p50 ms", "{:,.2f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_tcp", "x tcp", "{:.3f}"),
    ],
    "many": [
        ("goodput_mbps", "MB/s", "{:,.1f}"),
        ("rss_start_mib", "srv RSS start MiB", "{:,.1f}"),
        ("rss_peak_mib", "srv RSS peak MiB", "{:,.1f}"),
        ("mb_per_cpu_s", "MB/CPU-s", "{:,.1f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_tcp", "x tcp", "{:.3f}"),
    ],
    "lossy": [
        ("goodput_mbps", "MB/s", "{:,.2f}"),
        ("mb_per_cpu_s", "MB/CPU-s", "{:,.1f}"),
        ("relay_drops", "relay drops", "{:,.0f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
    ],
}


# ---------------------------------------------------------------------------------- metrics


def _params_bytes(scenario: str, settings: dict[str, Any]) -> int:
    mib = settings["lossy_mib"] if scenario == "lossy" else settings["bulk_mib"]
    return int(mib * (1 << 20))


def metrics_of(record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one successful run; ``error`` set if the run did not do its job."""
    scenario, spec = record["scenario"], BY_NAME[record["peer"]]
    c, s = record["client"], record["server"]
    m: dict[str, Any] = {
        "client_cpu_s": c.get("cpu_s"),
        "server_cpu_s": s.get("cpu_s"),
        "cpu_s": c.get("cpu_s", 0.0) + s.get("cpu_s", 0.0),
    }
    if s.get("error_count"):
        m["server_errors"] = s["error_count"]
        m["server_error_sample"] = s.get("errors", [])[:2]
    if scenario in ("bulk", "lossy"):
        want = _params_bytes(scenario, settings)
        got = int(s.get("bytes", 0))
        if s.get("first_s") is None or got == 0:
            m["error"] = f"no data arrived; server errors: {s.get('errors', [])[:2]}"
            return m
        seconds = max(s["last_s"] - s["first_s"], 1e-9)
        m.update(bytes=got, seconds=seconds, goodput_mbps=got / seconds / 1e6)
        m["truncated"] = bool(s.get("truncated"))
        m["mb_per_cpu_s"] = got / 1e6 / m["cpu_s"] if m["cpu_s"] > 0 else math.nan
        if spec.kind == "udp":
            m["sent"] = c["sent"]
            m["loss_pct"] = 100.0 * (1 - got / c["sent"]) if c["sent"] else 0.0
        elif got < want and not m["truncated"]:
            m["error"] = f"received {got} of {want} bytes"
        if "relay" in record:
            counters = record["relay"]["counters"]
            m["relay_cpu_s"] = record["relay"]["cpu_s"]
            m["relay_drops"] = sum(
                v
                for d in (counters["up"], counters["down"])
                for k, v in d.items()
                if k.startswith("dropped")
            )
    elif scenario == "rr":
        if not c.get("count"):
            m["error"] = "no round trip completed"
            return m
        m.update(
            bytes=c["bytes"],
            seconds=c["seconds"],
            count=c["count"],
            rt_per_s=c["count"] / c["seconds"],
            p50_us=c["p50_us"],
            p99_us=c["p99_us"],
            lost=c.get("lost", 0),
        )
    elif scenario == "connect":
        m.update(
            bytes=c["bytes"],
            seconds=c["seconds"],
            count=c["count"],
            conn_per_s=c["count"] / c["seconds"],
            setup_p50_ms=c["setup_p50_ms"],
        )
    elif scenario == "many":
        m.update(
            bytes=c["bytes"],
            seconds=c["seconds"],
            conns=c["conns"],
            goodput_mbps=c["bytes"] / c["seconds"] / 1e6,
            rss_peak_mib=(s.get("rss_peak_kib") or 0) / 1024,
            rss_start_mib=(s.get("rss_start_kib") or 0) / 1024,
        )
        m["mb_per_cpu_s"] = c["bytes"] / 1e6 / m["cpu_s"] if m["cpu_s"] > 0 else math.nan
        if c["complete"] < c["conns"]:
            m["error"] = (
                f"{c['complete']} of {c['conns']} connections completed; "
                f"errors: {c.get('errors', [])[:2]}"
            )
    return m


# ---------------------------------------------------------------------------------- summary


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def _is_number(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize(report: dict[str, Any]) -> None:
    """Add ``summary``, ``targets``, ``notes`` and the rendered ``text``/``markdown`` tables."""
    settings = report["settings"]
    names = settings["peers"]
    summary: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for scenario in settings["scenarios"]:
        rows: dict[str, Any] = {}
        for name in names:
            spec, avail = BY_NAME[name], report["peers"][name]
            runs = [r for r in report["runs"] if r["scenario"] == scenario and r["peer"] == name]
            if not avail["available"]:
                rows[name] = {"status": "skipped", "note": avail["note"]}
                continue
            if not spec.applies(scenario):
                rows[name] = {"status": "n/a"}
                continue
            good = [r["metrics"] for r in runs if r["ok"]]
            errors = [r["error"] for r in runs if not r["ok"]]
            row: dict[str, Any] = {
                "status": "ok" if good else "failed",
                "rounds": len(runs),
                "rounds_ok": len(good),
                "errors": errors,
            }
            if good:
                keys = sorted({k for g in good for k, v in g.items() if _is_number(v)})
                row["median"] = {k: _median([g[k] for g in good if k in g]) for k in keys}
                head = [g[HEADLINE[scenario]] for g in good]
                row["min"], row["max"] = min(head), max(head)
                row["truncated"] = sum(1 for g in good if g.get("truncated"))
            rows[name] = row
            if errors:
                notes.append(
                    f"{scenario}/{name}: {len(errors)} of {len(runs)} runs failed: {errors[0]}"
                )
            if row.get("truncated"):
                notes.append(
                    f"{scenario}/{name}: {row['truncated']} run(s) hit the {settings['cap_s']:g} s "
                    "transfer cap; goodput is over the bytes that arrived"
                )
        _add_ratios(scenario, rows)
        summary[scenario] = rows
    for name in names:
        if not report["peers"][name]["available"]:
            notes.append(f"{name} skipped: {report['peers'][name]['note']}")
    report["summary"] = summary
    report["targets"] = _targets(summary)
    report["notes"] = notes
    report["text"], report["markdown"] = _render(report)


def _head(rows: dict[str, Any], name: str | None, scenario: str) -> float | None:
    row = rows.get(name or "")
    if not row or row.get("status") != "ok":
        return None
    value = row["median"].get(HEADLINE[scenario])
    return float(value) if value is not None else None


def _add_ratios(scenario: str, rows: dict[str, Any]) -> None:
    for name, row in rows.items():
        if row.get("status") != "ok":
            continue
        spec = BY_NAME[name]
        mine = _head(rows, name, scenario)
        ratios: dict[str, float | None] = {}
        if spec.kind != "aioquic":
            ratios["x_aioquic"] = _ratio(mine, _head(rows, "aioquic", scenario))
        for kind in ("tcp", "udp"):
            base = baseline(spec, kind)
            if base is not None and base.name != name:
                ratios[f"x_{kind}"] = _ratio(mine, _head(rows, base.name, scenario))
        if scenario == "rr":
            base = baseline(spec, "tcp")
            if base is not None and base.name != name and rows.get(base.name, {}).get("median"):
                ratios["p50_x_tcp"] = _ratio(
                    row["median"].get("p50_us"), rows[base.name]["median"].get("p50_us")
                )
        if spec.loop == "uvloop":
            default = next((p for p in PEERS if p.kind == spec.kind and p.loop == "asyncio"), None)
            if default is not None:
                ratios["x_default_loop"] = _ratio(mine, _head(rows, default.name, scenario))
        row["ratios"] = {k: v for k, v in ratios.items() if v is not None}
        row["median"].update(row["ratios"])


def _targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's speed targets for utcp, each met, missed or unmeasured (None)."""
    out: list[dict[str, Any]] = []

    def check(scenario: str, peer: str, key: str, goal: float, text: str, less: bool) -> None:
        rows = summary.get(scenario, {})
        kind = {"x_udp": "udp", "x_tcp": "tcp", "p50_x_tcp": "tcp"}.get(key)
        same_loop = baseline(BY_NAME[peer], kind) if kind else None
        base = {"x_aioquic": "aioquic", "x_default_loop": "utcp"}.get(key) or (
            same_loop.name if same_loop else None
        )
        if peer not in rows or (base is not None and base not in rows):
            return  # not part of this run
        row = rows[peer]
        value = (row.get("ratios") or {}).get(key) if row.get("status") == "ok" else None
        met = None if value is None else (value <= goal if less else value > goal)
        out.append(
            {
                "target": text,
                "scenario": scenario,
                "peer": peer,
                "value": value,
                "goal": goal,
                "met": met,
            }
        )

    for peer in ("utcp", "utcp-uvloop"):
        check("bulk", peer, "x_aioquic", 4.0, "bulk > 4x aioquic", False)
        check("bulk", peer, "x_udp", 0.6, "bulk > 0.6x raw UDP, same loop", False)
        check("rr", peer, "x_aioquic", 2.5, "rr round trips/s > 2.5x aioquic", False)
        check("rr", peer, "p50_x_tcp", 1.5, "rr p50 <= 1.5x kernel TCP, same loop", True)
        check("lossy", peer, "x_aioquic", 2.0, "lossy goodput > 2x aioquic", False)
    for scenario in SCENARIOS:
        check(
            scenario, "utcp-uvloop", "x_default_loop", 1.0, f"{scenario}: uvloop > default", False
        )
    return out


# ---------------------------------------------------------------------------------- rendering


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    median = row.get("median") or {}
    if key == "cpu_split":
        if median.get("client_cpu_s") is None or median.get("server_cpu_s") is None:
            return ""
        return f"{median['client_cpu_s']:.2f}+{median['server_cpu_s']:.2f}"
    value = median.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def _table(scenario: str, rows: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = COLUMNS[scenario]
    header = ["peer", "loop", *(c[1] for c in cols), "rounds"]
    body = []
    for name, row in rows.items():
        spec = BY_NAME[name]
        status = row["status"]
        if status == "ok":
            cells = [_cell(row, key, fmt) for key, _, fmt in cols]
            rounds = f"{row['rounds_ok']}/{row['rounds']}"
            if row.get("truncated"):
                rounds += f" ({row['truncated']} capped)"
            if row["rounds_ok"] < row["rounds"]:
                rounds += " (some failed)"
        else:
            text = {
                "n/a": "n/a",
                "skipped": f"skipped ({row.get('note', '')})",
                "failed": "FAILED: " + (row.get("errors") or ["?"])[0][:70],
            }[status]
            cells = [text] + [""] * (len(cols) - 1)
            rounds = ""
        body.append([name, spec.loop, *cells, rounds])
    return header, body


def _title(scenario: str, settings: dict[str, Any]) -> str:
    rounds = f"medians of {settings['rounds']} round(s)"
    if scenario == "bulk":
        return (
            f"bulk: one connection sends {settings['bulk_mib']:g} MiB; goodput at the "
            f"receiver, first to last byte; {rounds}"
        )
    if scenario == "rr":
        return f"rr: 64-byte request echoed, one at a time, {settings['rr_seconds']:g} s; {rounds}"
    if scenario == "connect":
        return (
            f"connect: open, 64-byte echo, close and wait, sequentially for "
            f"{settings['connect_seconds']:g} s; {rounds}"
        )
    if scenario == "many":
        return (
            f"many: {settings['many_conns']} concurrent connections each echoing "
            f"{settings['many_kib']} KiB; {rounds}"
        )
    return (
        f"lossy: {settings['lossy_mib']:g} MiB through utcp.netem.Relay, 1% loss and 10 ms "
        f"delay each way; {rounds}"
    )


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return "/".join(f"{x:.2f}" for x in load) if load else "unknown"


def _render(report: dict[str, Any]) -> tuple[str, str]:
    settings, m, v = report["settings"], report["machine"], report["versions"]
    head = (
        f"utcp benchmark, {report['date']}; {m['nproc']} CPUs ({m['cpu_model']}), "
        f"{m['memory_gib']:.0f} GiB, Linux {m['kernel']}, load before the run "
        f"{_load(m)}\n"
        + "versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + "\n"
        + "MB = 10^6 bytes; 'x peer' = this row's median over that peer's median (same loop for "
        "tcp/udp); CPU s = client + server CPU seconds (user + system)"
    )
    text_parts, md_parts = [head], [head.replace("\n", "  \n")]
    for scenario in settings["scenarios"]:
        header, body = _table(scenario, report["summary"][scenario])
        spans = {i for i, r in enumerate(body) if r[3:] == [""] * (len(r) - 3)}
        table = [header] + [r for i, r in enumerate(body) if i not in spans]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        lines = [_title(scenario, settings), line(header), line(["-" * w for w in widths])]
        for i, r in enumerate(body):
            # a row that is only a status (n/a, skipped, FAILED) is written out, not aligned
            if i in spans:
                lines.append(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}")
            else:
                lines.append(line(r))
        text_parts.append("\n".join(lines))
        md_parts.append(
            "\n".join(
                [
                    f"**{_title(scenario, settings)}**",
                    "",
                    "| " + " | ".join(header) + " |",
                    "|" + "|".join("---" for _ in header) + "|",
                ]
                + ["| " + " | ".join(r) + " |" for r in body]
            )
        )
    if report["targets"]:
        lines = ["targets (issue 5):"]
        for t in report["targets"]:
            mark = {True: "met    ", False: "MISSED ", None: "no data"}[t["met"]]
            value = "" if t["value"] is None else f"{t['value']:.3f}"
            lines.append(f"  {mark} {t['peer']:12} {t['target']:40} {value}".rstrip())
        text_parts.append("\n".join(lines))
        md_parts.append("```\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(text_parts), "\n\n".join(md_parts)


# ---------------------------------------------------------------------------------- outputs


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return {
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gib": memory,
        "kernel": platform.release(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for label, dist in (
        ("utcp", "utcp-transport"),
        ("uvloop", "uvloop"),
        ("aioquic", "aioquic"),
        ("aiokcp", "aiokcp"),
        ("cryptography", "cryptography"),
    ):
        try:
            found[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[label] = None
    found["utcp_source_sha256"] = _source_digest()
    try:
        found["utcp_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found["utcp_commit"] = None
    return found


def _source_digest() -> str | None:
    """A digest of the utcp sources measured (the commit alone misses uncommitted work)."""
    try:
        import utcp
    except ImportError:
        return None
    digest = hashlib.sha256()
    root = Path(utcp.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = {"json": out / f"bench-{stamp}.json", "markdown": out / f"bench-{stamp}.md"}
    png = out / f"bench-{stamp}.png"
    if _chart(report, png):
        paths["png"] = png
    report["files"] = {k: str(p) for k, p in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths["markdown"].write_text(report["markdown"] + "\n")
    return paths


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


_COLOURS = {
    "utcp": "#d62728",
    "tcp": "#7f7f7f",
    "udp": "#bcbd22",
    "aioquic": "#1f77b4",
    "aiokcp": "#2ca02c",
}


def _chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report["notes"].append("matplotlib is not installed: no PNG chart")
        return False
    scenarios = report["settings"]["scenarios"]
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 2.2 + 2.1 * len(scenarios)))
    axes = [axes] if len(scenarios) == 1 else list(axes)
    for ax, scenario in zip(axes, scenarios):
        rows = report["summary"][scenario]
        names = list(rows)
        values, lo, hi, colours = [], [], [], []
        for name in names:
            row = rows[name]
            value = _head(rows, name, scenario)
            values.append(value or 0.0)
            lo.append((value - row["min"]) if value else 0.0)
            hi.append((row["max"] - value) if value else 0.0)
            colours.append(_COLOURS.get(BY_NAME[name].kind, "#999999"))
        y = list(range(len(names)))
        shown = [i for i in y if values[i] > 0]
        ax.barh(
            [y[i] for i in shown],
            [values[i] for i in shown],
            xerr=[[lo[i] for i in shown], [hi[i] for i in shown]],
            color=[colours[i] for i in shown],
            capsize=2,
        )
        ax.set_yticks(y, names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        if shown:
            ax.set_xscale("log")
            ax.set_xlim(right=max(values[i] + hi[i] for i in shown) * 4)
        for i, name in enumerate(names):
            if values[i] > 0:
                ax.text(values[i] + hi[i], i, f"  {_short(values[i])}", va="center", fontsize=8)
            else:  # n/a, skipped or failed: say so at the left edge
                ax.text(
                    0.01,
                    i,
                    rows[name]["status"],
                    va="center",
                    fontsize=8,
                    transform=ax.get_yaxis_transform(),
                )
        ax.set_title(_title(scenario, report["settings"]), fontsize=8.5, loc="left")
        ax.set_xlabel(HEADLINE_LABEL[scenario] + " (log scale; whiskers: min-max)", fontsize=8)
        ax.tick_params(labelsize=8)
    m = report["machine"]
    fig.suptitle(
        f"utcp benchmark {report['date']} - {m['nproc']} CPUs, {m['cpu_model']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

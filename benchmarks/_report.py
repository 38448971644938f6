"""From raw runs to what a reader compares: metrics per run, medians per peer, ratios to the
baselines measured in the same run, the issue's targets, a table, a JSON file and a bar chart.
A TLS peer's row follows its plain counterpart's; its ratios compare it with kernel TCP + TLS,
with aioquic (which always encrypts) and with itself without TLS (``x plain``).

MB is 10**6 bytes throughout; MiB (2**20) only names sizes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import ssl
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from _peers import BY_NAME, SCENARIOS, baseline, plain, same_variant

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
        ("bytes_per_segment", "data B/seg", "{:,.0f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_udp", "x udp", "{:.2f}"),
        ("x_tcp", "x tcp", "{:.3f}"),
        ("x_plain", "x plain", "{:.3f}"),
    ],
    "rr": [
        ("rt_per_s", "RT/s", "{:,.0f}"),
        ("p50_us", "p50 us", "{:,.0f}"),
        ("p99_us", "p99 us", "{:,.0f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_udp", "x udp", "{:.2f}"),
        ("p50_x_tcp", "p50 x tcp", "{:.2f}"),
        ("x_plain", "x plain", "{:.3f}"),
    ],
    "connect": [
        ("conn_per_s", "conn/s", "{:,.1f}"),
        ("setup_p50_ms", "open+echo p50 ms", "{:,.2f}"),
        ("x_aioquic", "x aioquic", "{:.2f}"),
        ("x_tcp", "x tcp", "{:.3f}"),
        ("x_plain", "x plain", "{:.3f}"),
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
# What a client's connection turned out to use (_adapters.Adapter.observed), kept per run.
OBSERVED = ("io_path", "tls_version", "tls_cipher")


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
    m.update({k: c[k] for k in OBSERVED if c.get(k)})
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
        if c.get("bytes_per_segment") is not None:  # utcp's sender: PMTU discovery's reach
            m["bytes_per_segment"] = c["bytes_per_segment"]
            m["segments_sent"] = c["segments_sent"]
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
        for name in _beside_plain(names):
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
                for key in OBSERVED:
                    seen = sorted({str(g[key]) for g in good if g.get(key)})
                    if seen:
                        row[key] = ", ".join(seen)
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
        notes += _add_ratios(scenario, rows)
        summary[scenario] = rows
    for name in names:
        if not report["peers"][name]["available"]:
            notes.append(f"{name} skipped: {report['peers'][name]['note']}")
    report["summary"] = summary
    report["tls_negotiated"] = _negotiated(summary)
    if len(set(report["tls_negotiated"].values())) > 1:
        notes.append(
            "the encrypted peers did not negotiate alike: "
            + "; ".join(f"{k} {v}" for k, v in report["tls_negotiated"].items())
        )
    report["targets"] = _targets(summary)
    report["notes"] = notes
    report["text"], report["markdown"] = _render(report)


def _beside_plain(names: list[str]) -> list[str]:
    """``names`` with each TLS peer moved to just after its plain counterpart, if that runs."""
    follows: dict[str, list[str]] = {}
    for name in names:
        anchor = next((p.name for p in plain(BY_NAME[name]) if p.name in names), None)
        if anchor is not None:
            follows.setdefault(anchor, []).append(name)
    moved = {n for group in follows.values() for n in group}
    return [m for n in names if n not in moved for m in (n, *follows.get(n, ()))]


def _negotiated(summary: dict[str, Any]) -> dict[str, str]:
    """Per encrypted peer (the TLS peers and aioquic), the TLS version and cipher its
    clients negotiated, over every scenario."""
    found: dict[str, set[str]] = {}
    for rows in summary.values():
        for name, row in rows.items():
            if row.get("tls_cipher"):
                found.setdefault(name, set()).add(
                    f"{row.get('tls_version', '?')} {row['tls_cipher']}"
                )
    return {name: "; ".join(sorted(v)) for name, v in found.items()}


def _head(rows: dict[str, Any], name: str | None, scenario: str) -> float | None:
    row = rows.get(name or "")
    if not row or row.get("status") != "ok":
        return None
    value = row["median"].get(HEADLINE[scenario])
    return float(value) if value is not None else None


def _add_ratios(scenario: str, rows: dict[str, Any]) -> list[str]:
    """Each ok row's ratios to its baselines (``ratios``; ``baselines`` names whom each divides
    by); returns notes on ratios left out."""
    notes: list[str] = []
    for name, row in rows.items():
        if row.get("status") != "ok":
            continue
        spec = BY_NAME[name]
        mine = _head(rows, name, scenario)
        ratios: dict[str, float | None] = {}
        bases: dict[str, str] = {}
        if spec.kind != "aioquic":
            ratios["x_aioquic"] = _ratio(mine, _head(rows, "aioquic", scenario))
            bases["x_aioquic"] = "aioquic"
        for kind in ("tcp", "udp"):
            base = baseline(spec, kind)  # a TLS peer's tcp baseline is tcp-tls; it has no udp
            if base is not None and base.name != name:
                ratios[f"x_{kind}"] = _ratio(mine, _head(rows, base.name, scenario))
                bases[f"x_{kind}"] = base.name
        if scenario == "rr":
            base = baseline(spec, "tcp")
            if base is not None and base.name != name and rows.get(base.name, {}).get("median"):
                ratios["p50_x_tcp"] = _ratio(
                    row["median"].get("p50_us"), rows[base.name]["median"].get("p50_us")
                )
                bases["p50_x_tcp"] = base.name
        if spec.loop == "uvloop":
            default = same_variant(spec, "asyncio")
            if default is not None:
                ratios["x_default_loop"] = _ratio(mine, _head(rows, default.name, scenario))
                bases["x_default_loop"] = default.name
        for other in plain(spec):  # what TLS costs: over the same peer without it
            base_row = rows.get(other.name) or {}
            if base_row.get("status") != "ok":
                continue
            if base_row.get("io_path") != row.get("io_path"):
                notes.append(
                    f"{scenario}/{name}: x plain not taken over {other.name}, which ran the "
                    f"{base_row.get('io_path')} I/O path ({name}: {row.get('io_path')})"
                )
                continue
            ratios["x_plain"] = _ratio(mine, _head(rows, other.name, scenario))
            bases["x_plain"] = other.name
            break
        row["ratios"] = {k: v for k, v in ratios.items() if v is not None}
        row["baselines"] = {k: v for k, v in bases.items() if k in row["ratios"]}
        row["median"].update(row["ratios"])
    return notes


# The speed targets, as (scenario, ratio key, operator, goal, text, peers judged).  The
# headline ones are this issue's: the I/O-path targets are judged on the fast path
# (utcp-portable stands beside it in the tables, unjudged).  The earlier ones are issue 5's,
# now judged on utcp-fast(-uvloop), the 1452-byte configuration they were set for.
HEADLINE_GROUP = "targets (I/O paths and PMTU discovery)"
EARLIER_GROUP = "earlier targets (issue 5), on utcp-fast and utcp-fast-uvloop"
_FAST = ("utcp-fast", "utcp-fast-uvloop")
_PMTUD = ("utcp-pmtud", "utcp-pmtud-uvloop")
_HEADLINE = (
    ("bulk", "x_aioquic", ">=", 10.0, "bulk, PMTUD off >= 10x aioquic", ("utcp-fast",)),
    ("bulk", "x_udp", ">=", 3.0, "bulk, PMTUD off >= 3x raw UDP 1452 B", _FAST),
    ("bulk", "x_tcp", ">=", 0.25, "bulk, PMTUD on >= 0.25x TCP", _PMTUD),
    ("rr", "p50_x_tcp", "<=", 1.3, "rr p50 <= 1.3x TCP's", _FAST),
)
_EARLIER = (
    ("bulk", "x_aioquic", ">", 4.0, "bulk > 4x aioquic", _FAST),
    ("bulk", "x_udp", ">", 0.6, "bulk > 0.6x raw UDP", _FAST),
    ("rr", "x_aioquic", ">", 2.5, "rr round trips/s > 2.5x aioquic", _FAST),
    ("rr", "p50_x_tcp", "<=", 1.5, "rr p50 <= 1.5x TCP's", _FAST),
    ("lossy", "x_aioquic", ">", 2.0, "lossy goodput > 2x aioquic", _FAST),
    *(
        (s, "x_default_loop", ">", 1.0, f"{s}: uvloop > default loop", ("utcp-fast-uvloop",))
        for s in SCENARIOS
    ),
)
# One entry per target and peer: (group, scenario, peer, ratio key, operator, goal, text).
TARGETS: tuple[tuple[str, str, str, str, str, float, str], ...] = tuple(
    (group, scenario, peer, key, op, goal, text)
    for group, table in ((HEADLINE_GROUP, _HEADLINE), (EARLIER_GROUP, _EARLIER))
    for scenario, key, op, goal, text, judged in table
    for peer in judged
)
_BASE_KIND = {"x_udp": "udp", "x_tcp": "tcp", "p50_x_tcp": "tcp"}


def _target_baseline(peer: str, key: str) -> str | None:
    """The peer a target's ratio divides by: aioquic, the same loop's TCP or raw UDP, or the
    same utcp variant on the default loop."""
    spec = BY_NAME[peer]
    if key == "x_aioquic":
        return "aioquic"
    if key == "x_default_loop":
        base = same_variant(spec, "asyncio")
    else:
        base = baseline(spec, _BASE_KIND[key])
    return base.name if base is not None else None


def _targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed targets for utcp, each met, missed or unmeasured (None); a target whose peer
    or baseline is not part of this run is left out."""
    out: list[dict[str, Any]] = []
    for group, scenario, peer, key, op, goal, text in TARGETS:
        rows = summary.get(scenario, {})
        base = _target_baseline(peer, key)
        if peer not in rows or base not in rows:
            continue
        row = rows[peer]
        value = (row.get("ratios") or {}).get(key) if row.get("status") == "ok" else None
        met = None
        if value is not None:
            met = {">=": value >= goal, ">": value > goal, "<=": value <= goal}[op]
        out.append(
            {
                "group": group,
                "target": text,
                "scenario": scenario,
                "peer": peer,
                "baseline": base,
                "key": key,
                "op": op,
                "value": value,
                "goal": goal,
                "met": met,
            }
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
        f"lossy: {settings['lossy_mib']:g} MiB through utcp.tools.netem.Relay, 1% loss and 10 ms "
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
        "tcp/udp); CPU s = client + server CPU seconds (user + system); data B/seg = utcp "
        "sender's bytes per segment sent (PMTU discovery's reach)"
    )
    if any(BY_NAME[n].tls for n in settings["peers"]):
        head += (
            "\nTLS rows (-tls, TLS 1.3): 'x tcp' divides by tcp-tls (kernel TCP + TLS), "
            "'x aioquic' by aioquic (QUIC always encrypts), 'x plain' by the same peer without "
            "TLS (what TLS costs it: " + ", ".join(_plain_pairs(report)) + ")"
        )
    variants: dict[tuple[str, bool], list[str]] = {}
    for name in settings["peers"]:
        if BY_NAME[name].kind == "utcp":
            variants.setdefault((BY_NAME[name].variant, BY_NAME[name].tls), []).append(name)
    if variants:
        head += "\nutcp peers: " + "; ".join(
            f"{', '.join(names)} = {BY_NAME[names[0]].description}" for names in variants.values()
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
    tls_lines = _tls_lines(report)
    if tls_lines:
        text_parts.append("\n".join(tls_lines))
        md_parts.append("  \n".join(tls_lines))
    if report["targets"]:
        lines = _target_lines(report["targets"])
        text_parts.append("\n".join(lines))
        md_parts.append("```\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(text_parts), "\n\n".join(md_parts)


def _plain_pairs(report: dict[str, Any]) -> list[str]:
    """'tls-peer / plain-peer' for every x plain ratio of the run (else the ones intended)."""
    pairs = {
        f"{name} / {row['baselines']['x_plain']}": None
        for rows in report["summary"].values()
        for name, row in rows.items()
        if (row.get("baselines") or {}).get("x_plain")
    }
    if not pairs:
        names = [n for n in report["settings"]["peers"] if BY_NAME[n].tls]
        pairs = {f"{n} / {plain(BY_NAME[n])[0].name} (not in this run)": None for n in names}
    return list(pairs)


def _tls_lines(report: dict[str, Any]) -> list[str]:
    """How the run encrypted: who made the certificates and what each peer negotiated."""
    tls, negotiated = report.get("tls") or {}, report.get("tls_negotiated") or {}
    lines = []
    if tls.get("made_by"):
        lines.append(
            f"TLS certificates by {tls['made_by']}: {tls['certificate']}; {tls['protocol']}"
        )
    if negotiated:
        lines.append("TLS negotiated: " + "; ".join(f"{k} {v}" for k, v in negotiated.items()))
    return lines


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    """One line per target under its group's heading: mark, peer, target, value / baseline."""
    peer_w = max(len(t["peer"]) for t in targets)
    text_w = max(len(t["target"]) for t in targets)
    lines: list[str] = []
    for group in dict.fromkeys(t["group"] for t in targets):
        if lines:
            lines.append("")
        lines.append(f"{group}:")
        for t in (t for t in targets if t["group"] == group):
            mark = {True: "met    ", False: "MISSED ", None: "no data"}[t["met"]]
            value = "" if t["value"] is None else f"{t['value']:.3f}"
            lines.append(
                f"  {mark} {t['peer']:{peer_w}} {t['target']:{text_w}} {value:>7}  "
                f"(vs {t['baseline']})"
            )
    return lines


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


def _utcp_build() -> str:
    """Which core the workers import: the compiled build or the sources (README)."""
    import utcp._build

    if utcp._build.compiled():
        return "compiled"
    return "pure (stale build)" if build_warning() else "pure"


def build_warning() -> str | None:
    """Why a benchmark would run the pure-Python core although a compiled build is there: a
    covered source edited (or only touched, as ``git stash`` does) since the build.  Said at
    the start, since a run of the sources measures something else than one of the build."""
    import utcp._build

    if os.environ.get("UTCP_PURE") == "1" or not utcp._build.stale():
        return None
    return (
        "warning: a utcp source is newer than the compiled build, so the pure-Python core "
        "runs here; `make build` rebuilds it (UTCP_PURE=1 runs the sources on purpose)"
    )


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for label, dist in (
        ("utcp", "utcp-transport"),
        ("uvloop", "uvloop"),
        ("aioquic", "aioquic"),
        ("aiokcp", "aiokcp"),
        ("cryptography", "cryptography"),
        ("trustme", "trustme"),
    ):
        try:
            found[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[label] = None
    found["openssl"] = ssl.OPENSSL_VERSION  # what the TLS peers' ssl module runs on
    found["utcp_build"] = _utcp_build()
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
    "utcp-portable": "#ff9896",
    "utcp-pmtud": "#8c1c13",
    "tcp": "#7f7f7f",
    "udp": "#bcbd22",
    "aioquic": "#1f77b4",
    "aiokcp": "#2ca02c",
    "utcp-tls": "#9467bd",
    "tcp-tls": "#393939",
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
    per_scenario_in = max(1.4, 0.6 + 0.16 * len(report["settings"]["peers"]))  # a row per bar
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 1.0 + per_scenario_in * len(scenarios)))
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
            spec = BY_NAME[name]
            key = f"{spec.kind}-tls" if spec.tls else f"{spec.kind}-{spec.variant}"
            colour = _COLOURS.get(key) or _COLOURS.get(spec.kind)
            colours.append(colour or "#999999")
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

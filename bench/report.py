"""bench/results/bench.json -> bench/results/bench.md (tables) and bench/results/bench.png (plot).

python -m bench.report   # re-renders from the JSON without running anything
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import ratio

RESULTS = Path(__file__).resolve().parent / "results"


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _lag(lag: dict[str, Any]) -> str:
    late = f" ({lag['late']} late)" if lag.get("late") else ""
    return f"{_f(lag['p50'])} / {_f(lag['p99'])} / {_f(lag['max'])}{late}"


def main_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| N | operator | lag p50 / p99 / max s (changes) | PAI calls /min | calls /interval (per 100 active) "
        "| calls /change | status writes /min | writes /change | writes w/o status change | RSS mean / peak MiB "
        "| CPU mean / peak cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in doc["sizes"].items():
        for variant in ("ours", "scan", "naive"):
            if variant not in entry:
                continue
            s = entry[variant]["steady"]
            per100 = s["calls_per_interval_per_active"]
            lines.append(
                f"| {int(n):,} | {variant} | {_lag(s['lag'])} ({s['lag']['n']}) | {_f(s['calls_per_min'])} "
                f"| {_f(s['calls_per_interval'])} ({_f(per100 * 100 if per100 is not None else None, 2)}) "
                f"| {_f(s['calls_per_change'], 2)} | {_f(s['status_writes_per_min'])} "
                f"| {_f(s['writes_per_change'], 2)} | {_f(s['unchanged_writes'])} "
                f"| {_f(s['rss_mean_mib'])} / {_f(s['rss_peak_mib_lifetime'])} "
                f"| {_f(s['cpu_mean'], 2)} / {_f(s['cpu_peak'], 2)} |"
            )
    return lines


def startup_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| N | operator | first sync: s / PAI calls / max calls in 1 s | mass finish: runs / s to show all / lag p99 "
        "| restart: finished / active | restart: s to healthy / steady | restart: PAI calls (to finished runs) "
        "| restart: status writes | throttled by PAI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in doc["sizes"].items():
        for variant in ("ours", "scan", "naive"):
            if variant not in entry:
                continue
            r = entry[variant]
            i, m, re_, rl = r["initial"], r["mass_finish"], r["restart"], r["rate_limit"]
            lines.append(
                f"| {int(n):,} | {variant} | {_f(i['seconds'])} / {_f(i['calls']['total'])} / "
                f"{_f(i['max_calls_in_1s'])} | {_f(m['ended'])} / {_f(m['drain_seconds'])} / {_f(m['lag']['p99'])} "
                f"| {_f(re_['finished'])} / {_f(re_['active'])} "
                f"| {_f(re_['healthy_seconds'])} / {_f(re_['steady_seconds'])} "
                f"| {_f(re_['calls']['total'])} ({_f(re_['calls_for_finished_runs'])}) "
                f"| {_f(re_['status_writes'])} | {_f(rl['throttled'])} |"
            )
    return lines


def ratio_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| N | PAI calls | status writes | lag p50 | lag p99 | mass-finish lag p50 | mass-finish lag p99 | CPU | RSS "
        "| calls at restart |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in doc["sizes"].items():
        r = entry.get("ratios")
        if not r:
            continue
        lines.append(
            f"| {int(n):,} | {_f(r['calls_per_min'], 3)} | {_f(r['status_writes_per_min'], 3)} "
            f"| {_f(r['lag_p50'], 2)} | {_f(r['lag_p99'], 2)} | {_f(r.get('mass_finish_lag_p50'), 2)} "
            f"| {_f(r.get('mass_finish_lag_p99'), 2)} | {_f(r['cpu_mean'], 2)} | {_f(r['rss_mean'], 2)} "
            f"| {_f(r['restart_calls'], 3)} |"
        )
    return lines


def shards_table(shards: dict[str, Any]) -> list[str]:
    replicas = shards.get("replicas", 2)
    lines = [
        "| N | replicas | active runs: polled by exactly one replica | by two | by none | not by its owner "
        "| runs per replica | tracked per replica |",
        "|---|---|---|---|---|---|---|---|",
        f"| {shards['n']:,} | {replicas} | {shards['runs_polled_by_one_replica']:,} "
        f"| {shards['runs_polled_by_two_replicas']} "
        f"| {shards['runs_polled_by_none']} | {shards['runs_not_polled_by_their_hash_owner']} "
        f"| {' / '.join(str(x) for x in shards['runs_per_replica'])} "
        f"| {' / '.join(_f(x, 0) for x in shards['tracked_resources_per_replica'])} |",
    ]
    if shards.get("killed_replica_active_runs") is not None:
        lines += [
            "",
            "| one replica SIGKILLed: its active runs | taken over | slowest take-over s | median s | bound s |",
            "|---|---|---|---|---|",
            f"| {shards['killed_replica_active_runs']} | {shards['taken_over']} "
            f"| {_f(shards['takeover_seconds_max'], 1)} | {_f(shards['takeover_seconds_median'], 1)} "
            f"| {_f(shards['takeover_bound_seconds'], 0)} |",
        ]
    return lines


def rate_limit_table(r: dict[str, Any]) -> list[str]:
    return [
        "| N at once | PAIFLOW_QPS / burst | PAI quota qps | seconds | PAI calls | throttled | max calls in one second "
        "| seconds over qps + burst | seconds after the first 5 over qps | mean qps | first sync of all (projected) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['n']:,} | {r['operator_qps']:g} / {r['operator_burst']} | {r['pai_quota_qps']:g} | {_f(r['seconds'])} "
        f"| {_f(r['calls'])} | {_f(r['throttled'])} | {_f(r['max_calls_in_a_second'])} "
        f"| {_f(r['seconds_over_qps_plus_burst'])} | {_f(r['seconds_over_qps_after_first_5s'])} "
        f"| {_f(r['mean_qps'], 2)} "
        f"| {_f(r['projected_first_sync_seconds'], 0)} s |",
    ]


def targets_table(doc: dict[str, Any]) -> list[str]:
    """Issue 5's targets against the largest N measured with both operators."""
    sizes = [n for n, e in doc["sizes"].items() if "ours" in e]
    if not sizes:
        return []
    n = max(sizes, key=int)
    entry = doc["sizes"][n]
    o, interval = entry["ours"], doc["config"]["interval"]
    s, r = o["steady"], o["restart"]
    active = s["active_runs"]
    rows: list[tuple[str, str, bool | None]] = [
        (f"p99 status lag <= {interval + 5:g} s", f"{_f(s['lag']['p99'])} s", _le(s["lag"]["p99"], interval + 5)),
        (
            "RSS <= 300 MiB",
            f"steady {_f(s['rss_mean_mib'])}, peak {_f(s['rss_peak_mib_lifetime'])}; after restart peak "
            f"{_f(r['rss_peak_mib'])}",
            _le(max(s["rss_peak_mib_lifetime"] or 0, r["rss_peak_mib"] or 0), 300),
        ),
        ("mean CPU <= 0.5 core", f"{_f(s['cpu_mean'], 2)} (peak {_f(s['cpu_peak'], 2)})", _le(s["cpu_mean"], 0.5)),
        ("status writes / real changes <= 1.05", _f(s["writes_per_change"], 3), _le(s["writes_per_change"], 1.05)),
        ("no write for an unchanged poll", f"{s['unchanged_writes']} unchanged writes", s["unchanged_writes"] == 0),
        (
            "no PAI calls for finished runs (also after restart)",
            f"{s['calls_for_finished_runs']} in steady state, {r['calls_for_finished_runs']} after restart",
            s["calls_for_finished_runs"] == 0 and r["calls_for_finished_runs"] == 0,
        ),
        (
            f"<= N/50 PAI calls per interval ({active:,} active: {active / 50:,.0f})",
            f"{_f(s['calls_per_interval'])}",
            _le(s["calls_per_interval"], active / 50),
        ),
        (
            "the emulator never throttles (rate limit holds)",
            f"{o['rate_limit']['throttled']} throttled",
            o["rate_limit"]["throttled"] == 0,
        ),
    ]
    ratios_ = entry.get("ratios") or {}
    if ratios_:
        rows += [
            (
                "10x fewer PAI calls than naive",
                f"ratio {_f(ratios_['calls_per_min'], 3)}",
                _le(ratios_["calls_per_min"], 0.1),
            ),
            (
                "10x fewer status writes than naive",
                f"ratio {_f(ratios_['status_writes_per_min'], 3)}",
                _le(ratios_["status_writes_per_min"], 0.1),
            ),
            (
                "lag no worse than naive (p99, mass finish p99)",
                f"ratio {_f(ratios_['lag_p99'], 2)}, {_f(ratios_.get('mass_finish_lag_p99'), 2)}",
                _le(ratios_["lag_p99"], 1.0),
            ),
        ]
    lines = [f"| target (N = {int(n):,}) | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else 'no' if ok is not None else '-'} |" for t, m, ok in rows]
    return lines


def workspace_table(doc: dict[str, Any]) -> list[str]:
    """Issue 12: workspace scans ("scan") side by side with the per-run path ("ours"), same N, same run."""
    sizes = [n for n, e in doc["sizes"].items() if "ours" in e and "scan" in e]
    imp = doc.get("import")
    if not sizes and not imp:
        return []
    interval = doc["config"]["interval"]
    lines = []
    if sizes:
        n = max(sizes, key=int)
        o, w = doc["sizes"][n]["ours"], doc["sizes"][n]["scan"]

        def rss(v: dict[str, Any]) -> float | None:
            peaks = [v["steady"]["rss_peak_mib_lifetime"], v["restart"]["rss_peak_mib"]]
            return max((p for p in peaks if p is not None), default=None)

        rows: list[tuple[str, str, str, str, bool | None]] = [
            (
                "PAI calls per interval, status changes included",
                _f(o["steady"]["calls_per_interval"]),
                _f(w["steady"]["calls_per_interval"]),
                f"<= N/100 = {int(n) / 100:g}",
                _le(w["steady"]["calls_per_interval"], int(n) / 100),
            ),
            (
                "mass finish: runs / p99 s until shown",
                f"{o['mass_finish']['ended']} / {_f(o['mass_finish']['lag']['p99'])}",
                f"{w['mass_finish']['ended']} / {_f(w['mass_finish']['lag']['p99'])}",
                f"<= interval + 10 = {interval + 10:g} s",
                _le(w["mass_finish"]["lag"]["p99"], interval + 10),
            ),
            (
                f"first sync of {int(n):,} hand-written runs with workspaceId: s / PAI calls",
                f"{_f(o['initial']['seconds'])} / {_f(o['initial']['calls']['total'])}",
                f"{_f(w['initial']['seconds'])} / {_f(w['initial']['calls']['total'])}",
                "<= 120 s (at 10,000)",
                _le(w["initial"]["seconds"], 120),
            ),
            (
                "status writes per real change",
                _f(o["steady"]["writes_per_change"], 3),
                _f(w["steady"]["writes_per_change"], 3),
                "<= 1.05",
                _le(w["steady"]["writes_per_change"], 1.05),
            ),
            (
                "RSS peak MiB, restart included",
                _f(rss(o)),
                _f(rss(w)),
                "<= 250",
                _le(rss(w), 250),
            ),
        ]
        lines += [
            f"| what (N = {int(n):,}) | per-run path (ours) | workspace scans (scan) | target | met |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {t} | {a} | {b} | {goal} | {'yes' if ok else 'no' if ok is not None else '-'} |"
            for t, a, b, goal, ok in rows
        ]
    if imp:
        if not lines:
            lines += ["| what | per-run path (ours) | workspace scans (scan) | target | met |", "|---|---|---|---|---|"]
        ok = imp["complete"] and imp["seconds"] <= 300 and (imp["writes_per_run"] or 0) <= 2
        lines.append(
            f"| import of a {imp['n']:,}-run workspace ({imp['workspaces']} PaiWorkspaces): s / resource writes per"
            f" run (+ Events per run) / PAI calls | n/a | {_f(imp['seconds'])} / {_f(imp['writes_per_run'], 3)}"
            f" (+ {_f(imp['events_per_run'], 3)}) / {_f(imp['calls']['total'])} | <= 300 s, <= 2 writes per run"
            f" | {'yes' if ok else 'no'} |"
        )
        lines.append(
            f"| import: RSS peak MiB | n/a | {_f(imp.get('rss_peak_mib'))} | <= 250 | "
            f"{'yes' if _le(imp.get('rss_peak_mib'), 250) else 'no'} |"
        )
    return lines


def ceiling_table(doc: dict[str, Any]) -> list[str]:
    """The mass finish against the API server's own ceiling, both measured in the same run."""
    rows = [
        "| N | variant | ceiling: status patches/s (first status) | patch + Event/s"
        " | control plane ms CPU per status write: ceiling / burst"
        " | ended | our status writes/s: busiest 10 s (whole burst) | ratio, busiest 10 s (goal >= 0.8) (whole burst)"
        " | lag p99 / goal (interval + ended / ceiling) | max / goal x 2 | late"
        " | cores: control plane / operator / emulator / benchmark"
        " | control plane quota, cores (periods throttled: ceiling / burst) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(doc["sizes"], key=int):
        for variant, v in doc["sizes"][n].items():
            c, m = v.get("ceiling"), v.get("mass_finish") or {}
            if not c or not m:
                continue
            lag, goal = m.get("lag") or {}, m.get("lag_goal_p99")
            # What each of our writes cost the control plane in the burst (its Events and reads included), beside
            # what a lean client's patch cost it: the part of a ratio below 1 the operator's CPU does not explain.
            cores, rate = m.get("control_plane_cpu_mean"), m.get("status_writes_per_second")
            burst_ms = 1000 * cores / rate if cores and rate else None
            # Throttled in most periods of both phases: the control plane was at its quota in both, so the ratio
            # compares two clients feeding a control plane of one size (bench/cpu_share.py).
            quota = v.get("control_plane_cpus")
            throttled = [(x.get("control_plane_throttling") or {}).get("throttled_share") for x in (c, m)]
            share = f"{_f(quota, 2)} ({_f(throttled[0], 2)} / {_f(throttled[1], 2)})" if quota else "none"
            rows.append(
                f"| {n} | {variant} | {_f(c['status_patches_per_second'])} "
                f"({_f(c.get('first_status_patches_per_second'))})"
                f" | {_f(c['patch_and_event_per_second'])}"
                f" | {_f(c.get('control_plane_cpu_ms_per_patch'), 2)} / {_f(burst_ms, 2)} "
                f"| {m.get('ended')} | {_f(m.get('peak_10s_per_second'))} ({_f(m.get('status_writes_per_second'))}) "
                f"| {_f(m.get('ceiling_ratio'), 2)} ({_f(m.get('mean_ceiling_ratio'), 2)}) "
                f"| {_f(lag.get('p99'))} / {_f(goal)} | {_f(lag.get('max'))} / {_f(2 * goal if goal else None)} "
                f"| {lag.get('late', 0)} | {_f(m.get('control_plane_cpu_mean'), 2)} / {_f(m.get('cpu_mean'), 2)} "
                f"/ {_f(m.get('emulator_cpu_mean'), 2)} / {_f(m.get('bench_cpu_mean'), 2)} | {share} |"
            )
    return rows if len(rows) > 2 else []


def plot_mass_finish(doc: dict[str, Any], path: Path) -> bool:
    """Lag of each ended run against the time it showed, one panel per N: where the tail comes from."""
    panels = [
        (n, variant, v["mass_finish"]["lag_series"])
        for n in sorted(doc["sizes"], key=int)
        for variant, v in doc["sizes"][n].items()
        if (v.get("mass_finish") or {}).get("lag_series")
    ]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (n, variant, series) in zip(axes[0], panels, strict=True):
        ax.scatter([s[0] for s in series], [s[1] for s in series], s=2)
        ax.set_title(f"mass finish, N={n} {variant}")
        ax.set_xlabel("seconds since the first run ended in PAI (when shown)")
        ax.set_ylabel("lag (s)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def markdown(doc: dict[str, Any]) -> str:
    m, c = doc["machine"], doc["config"]
    parts = [
        "# paiflow-operator scale benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, kopf {m['kopf']}, "
        f"kube-apiserver {m['kubernetes']} (local etcd + apiserver, no fsync). Run {doc.get('started', '?')}.",
        f"Poll interval {c['interval']:g} s; PAIFLOW_QPS {c['qps']:g} (emulator limit {c['pai_qps_limit']:g} qps for "
        f"the operator, none for the baseline); PAI latency {c['latency'] * 1000:g} ms; steady state "
        f"{c['duration']:g} s (operator), {c['naive_duration']:g} s (baseline). `ours` = `python -m paiflow_operator`"
        " as its ServiceAccount; `naive` = bench/naive_operator.py (one kopf timer per resource, GetPipelineRun and"
        " a status patch every tick)."
        + (
            " Operator settings given: " + ", ".join(f"{k}={v}" for k, v in c.get("operator_env") or []) + "."
            if c.get("operator_env")
            else ""
        ),
        "",
        "## Targets (issue 5)",
        "",
        *targets_table(doc),
        "",
        "The steady-state window is shorter than PAIFLOW_HEARTBEAT_INTERVAL (1 h) and than the detail refresh"
        " (PAIFLOW_DETAIL_REFRESH_INTERVAL, 6 h), so it holds neither: at 10,000 active runs they add about"
        " 83 status writes and 14 GetPipelineRun calls per 30 s interval, spread over the hour and six hours.",
        "",
        "## Steady state",
        "",
        *main_table(doc),
        "",
        "Lag: from the scripted PAI change to the benchmark's own watch showing the new runStatus. Status writes:"
        " the API server's `apiserver_request_total{verb=PATCH,resource=paipipelineruns,subresource=status}`."
        " Writes w/o status change: MODIFIED watch events (resourceVersion bumps) whose runStatus did not change.",
        "",
        "## Ratios (ours / naive; below 1 is better)",
        "",
        *ratio_table(doc),
        "",
        "## Start-up, mass change, restart, rate limit",
        "",
        *startup_table(doc),
    ]
    if workspace := workspace_table(doc):
        parts += [
            "",
            "## Workspace scans (issue 12): `scan` = the same runs, one PaiWorkspace per PAI workspace (maxRuns 0)",
            "",
            *workspace,
        ]
    if ceiling := ceiling_table(doc):
        parts += [
            "",
            "## Mass finish against the API server's ceiling (a lean async client, same control plane, same run)",
            "",
            *ceiling,
            "",
            "Lag of each ended run against when it showed: bench-mass-finish.png.",
        ]
    if doc.get("shards"):
        parts += ["", "## Replicas sharing runs through Leases", "", *shards_table(doc["shards"])]
    if doc.get("rate_limit"):
        parts += [
            "",
            "## Shipped rate limit, N resources appearing at once (calls counted by the emulator per second)",
            "",
            *rate_limit_table(doc["rate_limit"]),
        ]
    return "\n".join(parts) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in doc["sizes"]]
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    # Each panel reads one operator's whole result for one N.
    series: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("steady-state lag p99 (s)", lambda v: v["steady"]["lag"]["p99"]),
        ("mass-finish lag p99 (s)", lambda v: v["mass_finish"]["lag"]["p99"]),
        ("RSS mean, steady (MiB)", lambda v: v["steady"]["rss_mean_mib"]),
        ("PAI calls per minute", lambda v: v["steady"]["calls_per_min"]),
        ("status writes per minute", lambda v: v["steady"]["status_writes_per_min"]),
    ]
    for ax, (title, get) in zip(axes, series, strict=True):
        positive = True
        for variant, style in (("ours", "o-"), ("scan", "^-"), ("naive", "s--")):
            xs = [n for n in sizes if variant in doc["sizes"][str(n)]]
            ys = [get(doc["sizes"][str(n)][variant]) for n in xs]
            positive = positive and all(y is not None and y > 0 for y in ys)
            if xs:
                ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=variant)
        ax.set_xscale("log")
        # Calls and writes span orders of magnitude between the two operators.
        if positive and ("calls" in title or "writes" in title):
            ax.set_yscale("log")
        ax.set_xlabel("N resources")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratios(ours: dict[str, Any], naive: dict[str, Any]) -> dict[str, float | None]:
    """ours / naive: below 1 is better for every one of them."""
    o, b = ours["steady"], naive["steady"]
    return {
        "calls_per_min": ratio(o["calls_per_min"], b["calls_per_min"]),
        "status_writes_per_min": ratio(o["status_writes_per_min"], b["status_writes_per_min"]),
        "lag_p50": ratio(o["lag"]["p50"], b["lag"]["p50"]),
        "lag_p99": ratio(o["lag"]["p99"], b["lag"]["p99"]),
        # Hundreds of runs changing at once: a large sample for both, where the steady window has few.
        "mass_finish_lag_p50": ratio(ours["mass_finish"]["lag"]["p50"], naive["mass_finish"]["lag"]["p50"]),
        "mass_finish_lag_p99": ratio(ours["mass_finish"]["lag"]["p99"], naive["mass_finish"]["lag"]["p99"]),
        "cpu_mean": ratio(o["cpu_mean"], b["cpu_mean"]),
        "rss_mean": ratio(o["rss_mean_mib"], b["rss_mean_mib"]),
        "restart_calls": ratio(ours["restart"]["calls"]["total"], naive["restart"]["calls"]["total"]),
    }


def write(doc: dict[str, Any], directory: Path = RESULTS) -> str:
    # Recomputed here so that re-rendering an older JSON picks up ratios added since.
    for entry in doc["sizes"].values():
        if "ours" in entry and "naive" in entry:
            entry["ratios"] = ratios(entry["ours"], entry["naive"])
    text = markdown(doc)
    (directory / "bench.md").write_text(text)
    plot(doc, directory / "bench.png")
    plot_mass_finish(doc, directory / "bench-mass-finish.png")
    return text


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "bench.json"
    print(write(json.loads(source.read_text()), source.parent))

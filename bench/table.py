"""The human-readable summary of one run (the same figures as the JSON file)."""

from __future__ import annotations

from typing import Any

from bench.report import HttpFigure
from bench.transport_checks import Check

_HTTP_ROWS = (
    ("baseline/64", "baseline (bare Starlette + pydantic)", "req/s"),
    ("accept/64", "gateway accept (POST /v1/jobs -> 202)", "req/s"),
    ("baseline/1", "baseline, 1 connection", "req/s"),
    ("accept/1", "gateway accept, 1 connection", "req/s"),
)


def _http_rows(figures: dict[str, HttpFigure], transports: tuple[str, ...]) -> list[str]:
    rows = list(_HTTP_ROWS)
    for transport in transports:
        rows.append((f"full-{transport}/64", f"full cycle, {transport} transport", "jobs/s"))
    for transport in transports:
        rows.append((f"full-{transport}/1", f"full cycle, {transport}, 1 connection", "jobs/s"))
    rows.append(("floor/1", "protocol floor (no gateway work), 1 conn", "jobs/s"))
    lines = [
        f"{'':42} {'rate':>9} {'':6} {'spread':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU/req':>9} {'capacity':>9} {'srv busy':>8} {'others':>7} {'wrk busy':>8} "
        f"{'sim busy':>8}"
    ]
    for key, label, unit in rows:
        fig = figures.get(key)
        if fig is None:
            continue
        lines.append(
            f"{label:42} {fig.per_second:9,.0f} {unit:6} {fig.spread:6.0%} {fig.p50_ms:8.2f} "
            f"{fig.p99_ms:8.2f} {fig.server_cpu_us:6.0f} us {1e6 / fig.server_cpu_us:9,.0f} "
            f"{fig.server_busy:8.0%} {fig.others_busy:7.0%} "
            f"{fig.load_busy:8.0%} "
            + (f"{fig.simulator_busy:8.0%}" if fig.simulator_busy is not None else f"{'':8}")
        )
    return lines


def _bound_notes(figures: dict[str, HttpFigure]) -> list[str]:
    notes = []
    for key, fig in figures.items():
        load_cpu = fig.load_busy + fig.others_load_busy + (fig.simulator_busy or 0.0)
        if fig.simulator_busy is not None and load_cpu > 0.85 and key.endswith("/64"):
            notes.append(
                f"  note: {key}: the load CPU was {load_cpu:.0%} busy (simulator "
                f"{fig.simulator_busy:.0%}, wrk {fig.load_busy:.0%}, other processes "
                f"{fig.others_load_busy:.0%}): the simulator may have bounded this figure")
        elif fig.server_busy < 0.85 and key.endswith("/64"):
            cause = (f"other processes took {fig.others_busy:.0%} of it"
                     if fig.others_busy > 0.1 else "waits (I/O, the peer) bounded it")
            notes.append(f"  note: {key}: the server used only {fig.server_busy:.0%} of its CPU "
                         f"at saturation: {cause}")
    return notes


def _added_lines(added: dict[str, Any]) -> list[str]:
    lines = []
    accept = added.get("accept")
    if accept:
        lines.append(
            f"accept: median {accept['gateway_p50_ms']:.2f} ms vs baseline "
            f"{accept['baseline_p50_ms']:.2f} ms -> added p50 {accept['added_p50_ms']:+.2f} ms, "
            f"added p99 {accept['added_p99_ms']:+.2f} ms"
        )
    floor = added.get("floor")
    if floor:
        lines.append(
            f"protocol floor (the same messages, no gateway work): median "
            f"{_job_latency(floor)} (what the machine charges for the messages)"
        )
    for key, job in added.items():
        if not key.startswith("job_"):
            continue
        lines.append(f"job ({key.removeprefix('job_')}): median accept->completed "
                     f"{_job_latency(job)}")
        if "store_created_to_finished_ms" in job:
            lines.append(
                f"  its phases, by the gateway's own timestamps (medians): accepted -> submit "
                f"answered {job['store_created_to_submitted_ms']:.2f} ms, -> webhook arrived "
                f"{job['store_submitted_to_finished_ms']:.2f} ms; accepted -> webhook arrived "
                f"{job['store_created_to_finished_ms']:.2f} ms, the rest (reading the request, "
                f"the terminal commit, the answer) "
                f"{job['job_p50_ms'] - job['store_created_to_finished_ms']:.2f} ms"
            )
    return lines


def _job_latency(job: dict[str, float]) -> str:
    """report._job_latency's arithmetic, written out."""
    return (
        f"{job['job_p50_ms']:.2f} ms - simulator CPU {job['simulator_cpu_ms_per_job']:.2f} ms/job"
        f" - baseline round trip {job['baseline_p50_ms']:.2f} ms = {job['added_p50_ms']:.2f} ms"
        f" added"
    )


def _store_lines(store: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'':34} {'1 writer':>14} {'64 writers':>14}"]
    for mode, label in (("commit_per_request", "commit per request"),
                        ("group_commit", "group commit (SQLiteStore)")):
        one, many = store.get(f"{mode}/1"), store.get(f"{mode}/64")
        if one is None or many is None:
            continue
        batch = f"  ({many['jobs_per_commit']:.0f} jobs per commit at 64)" \
            if "jobs_per_commit" in many else ""
        lines.append(f"{label:34} {one['jobs_per_second']:10,.0f} /s {many['jobs_per_second']:10,.0f}"
                     f" /s{batch}")
    return lines


def _transport_lines(transports: dict[str, dict[str, float]],
                     checks: dict[str, list[Check]]) -> list[str]:
    lines = [f"{'':10} {'CPU/call @1':>12} {'CPU/call @64':>13} {'calls/s @1':>11} "
             f"{'calls/s @64':>12} {'client busy @64':>16}  checks"]
    for name in sorted({key.split("/")[0] for key in transports}):
        one, many = transports[f"{name}/1"], transports[f"{name}/64"]
        own = checks.get(name, [])
        required = [c for c in own if c.required]
        summary = f"{sum(c.ok for c in required)}/{len(required)} required passed"
        lines.append(
            f"{name:10} {one['cpu_per_call_us']:9,.0f} us {many['cpu_per_call_us']:10,.0f} us "
            f"{one['calls_per_second']:11,.0f} {many['calls_per_second']:12,.0f} "
            f"{many['client_busy']:16.0%}  {summary}"
        )
    for name, own in checks.items():
        for check in own:
            if not check.ok:
                kind = "FAILED" if check.required else "differs (informational)"
                lines.append(f"  {name}: {check.name} {kind}: {check.detail}")
    return lines


def _ratio_lines(ratios: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, item in ratios.items():
        value = f"{item['value']:.3f}" if "ms" not in name else f"{item['value']:.2f} ms"
        lines.append(f"{name:44} {value:>10}   target {item['target']:<7} "
                     f"{'met' if item['met'] else 'MISSED'}")
    return lines


def render(document: dict[str, Any], figures: dict[str, HttpFigure], checks: dict[str, list[Check]],
           transports: tuple[str, ...]) -> str:
    meta = document["meta"]
    out = [
        "",
        f"Kontext Gateway bench  {meta['started_at']}  commit {meta['commit']}",
        f"{meta['cpus']}; {meta['repeat']} run(s) per figure, medians; load average at start "
        f"{meta['loadavg_start']}",
    ]
    if meta.get("notes"):
        out += [f"note: {note}" for note in meta["notes"]]
    if figures:
        out += ["", "HTTP (wrk, 1 thread). CPU/req: all threads of the server under test, from /proc;",
                "capacity = 1 s / CPU per request (its rate with a whole CPU); busy = share of one CPU;",
                "others = share of the server's CPU taken by other processes meanwhile (noise)"]
        out += _http_rows(figures, transports)
        out += _bound_notes(figures)
        out += ["", "Added latency at low load (one connection, sequential requests, medians)"]
        out += _added_lines(document["added_latency"])
    if document.get("store"):
        out += ["", f"Store: one job row + one event row per write, WAL, synchronous=FULL, "
                    f"fresh file on {meta['tmp_filesystem']}"]
        out += _store_lines(document["store"])
    if document.get("transport"):
        out += ["", "Upstream transport: WaveSpeedClient.submit -> simulator "
                    "(client on the server CPU, simulator on the load CPU)"]
        out += _transport_lines(document["transport"], checks)
    if document.get("ratios"):
        out += ["", "Ratios against the targets (this run)"]
        out += _ratio_lines(document["ratios"])
    verdict = document.get("transport_verdict")
    if verdict:
        out += ["", _verdict_line(verdict)]
    out.append("")
    return "\n".join(out)


def _verdict_line(verdict: dict[str, Any]) -> str:
    faster, keep = verdict["faster"], verdict["keep"]
    correct = ", ".join(f"{n}: {'correct' if ok else 'NOT correct'}"
                        for n, ok in verdict["correct"].items())
    jobs = ", ".join(f"{n} {v:,.0f} jobs/s" for n, v in verdict["full_cycle_jobs_per_second"].items())
    return (f"Transport verdict: {faster} is faster (CPU per call); {correct}; full cycle: {jobs}. "
            f"Keep GATEWAY_UPSTREAM_TRANSPORT={keep}.")

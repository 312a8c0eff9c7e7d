#!/usr/bin/env python3
"""Turns one scripts/bench/run.sh run directory into a Markdown report.

  summarize.py bench-out/run-<date>   > results.md

Reads results.tsv (metric server round value), rss.tsv (time server phase
rss_kib), failures.txt and machine.txt. Reports the MEDIAN over rounds of each
measurement, the ratios Wharf/nginx and Wharf/reference (plain quotients of
the medians; the "better" column says which direction is good), every round's
raw value, peak RSS per phase, and a check of the project's targets.
"""
import collections
import statistics
import sys
from pathlib import Path

SERVERS = ["wharf", "reference", "nginx"]
FLAT_MIB = 10  # "flat": peak during the huge layer within this of the RSS before it

# metric, label, better ("higher"/"lower"), scale, digits
ROWS = [
    ("big_push_s", "Push 4×64 MiB image, wall time (s)", "lower", 1, 2),
    ("big_push_MBps", "Push 4×64 MiB image (MB/s)", "higher", 1, 0),
    ("big_pull_s", "Pull 4×64 MiB image, wall time (s)", "lower", 1, 2),
    ("big_pull_MBps", "Pull 4×64 MiB image (MB/s)", "higher", 1, 0),
    ("small_push8_s", "8 parallel pushes, 3×256 KiB each, wall (s)", "lower", 1, 2),
    ("small_pull8_s", "8 parallel pulls, 3×256 KiB each, wall (s)", "lower", 1, 2),
    ("mget_rps", "Manifest GET, 64 conns, wrk (req/s)", "higher", 1, 0),
    ("mget_p99_ms", "Manifest GET p99, wrk (ms)", "lower", 1, 2),
    ("mhead_rps", "Manifest HEAD, 64 conns, ab (req/s)", "higher", 1, 0),
    ("mhead_p99_ms", "Manifest HEAD p99, ab (ms)", "lower", 1, 2),
    ("mhead_wl_rps", "Manifest HEAD, 64 conns, wharf-load (req/s)", "higher", 1, 0),
    ("mhead_wl_p99_ms", "Manifest HEAD p99, wharf-load (ms)", "lower", 1, 2),
    ("mget_ab_rps", "Manifest GET, 64 conns, ab (req/s)", "higher", 1, 0),
    ("mget_ab_p99_ms", "Manifest GET p99, ab (ms)", "lower", 1, 2),
    ("blob1_MBps", "Blob GET 64 MiB, 1 conn (MB/s)", "higher", 1, 0),
    ("blob8_MBps", "Blob GET 64 MiB, 8 conns (MB/s)", "higher", 1, 0),
    ("rss_idle_kib", "RSS idle after start (MiB)", "lower", 1 / 1024, 1),
    ("huge_push_MBps", "Push one HUGE layer (MB/s)", "higher", 1, 0),
    ("huge_pull_MBps", "Pull one HUGE layer (MB/s)", "higher", 1, 0),
    ("hwm_kib", "Peak RSS over the whole run, VmHWM (MiB)", "lower", 1 / 1024, 1),
]
PHASES = [
    ("big-push", "push 4×64 MiB"),
    ("big-pull", "pull 4×64 MiB"),
    ("small-parallel", "8 parallel small push/pull"),
    ("manifest-wrk", "manifest GET/HEAD, 64 conns"),
    ("blob-wrk", "blob GET, 1 and 8 conns"),
]


def fmt(x, digits):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def main(run):
    run = Path(run)
    data = collections.defaultdict(list)  # (metric, server) -> [values in round order]
    for line in (run / "results.tsv").read_text().splitlines():
        m, s, r, v = line.split("\t")
        if v != "":
            data[(m, s)].append(float(v))
    rss = collections.defaultdict(list)  # (server, phase) -> [kib]
    rss_path = run / "rss.tsv"
    if rss_path.exists():
        for line in rss_path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[3]:
                rss[(parts[1], parts[2])].append(int(parts[3]))
    machine = dict(
        l.split("=", 1) for l in (run / "machine.txt").read_text().splitlines() if "=" in l
    )
    fails = [l for l in (run / "failures.txt").read_text().splitlines() if l.strip()]
    huge = int(machine.get("huge_mib", "0") or 0)
    huge_label = f"{huge // 1024} GiB" if huge >= 1024 and huge % 1024 == 0 else f"{huge} MiB"

    def med(m, s):
        v = data.get((m, s))
        return statistics.median(v) if v else None

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    out = []
    w = out.append
    w(f"# Wharf benchmark, {run.name.removeprefix('run-')}")
    w("")
    w(f"Command: `{machine.get('command', '')}`  ")
    w(
        f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), {machine.get('mem')} RAM, "
        f"kernel {machine.get('kernel')}, load average {machine.get('loadavg_start')} at start, "
        f"{machine.get('loadavg_end')} at end  "
    )
    w(
        f"Versions: wharf {machine.get('wharf')}, {machine.get('reference')}, "
        f"{machine.get('nginx')}, {machine.get('wrk')}, {machine.get('skopeo')}  "
    )
    w(f"Settings: {machine.get('rounds')} rounds, {machine.get('wrk_secs')} s per wrk/ab load, servers "
      f"interleaved with the order rotated each round; all on 127.0.0.1.")
    w("")
    w("Medians over rounds. Ratios are plain quotients of the medians (Wharf ÷ other); "
      "the *better* column says whether a higher or lower value is good.")
    w("")
    w("| Measurement | better | Wharf | reference | nginx | Wharf/nginx | Wharf/reference |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for m, label, better, scale, digits in ROWS:
        vals = {s: med(m, s) for s in SERVERS}
        if all(v is None for v in vals.values()):
            continue
        vals = {s: (v * scale if v is not None else None) for s, v in vals.items()}
        label = label.replace("HUGE", huge_label)
        rn = ratio(vals["wharf"], vals["nginx"])
        rr = ratio(vals["wharf"], vals["reference"])
        w(
            f"| {label} | {better} | {fmt(vals['wharf'], digits)} | {fmt(vals['reference'], digits)} "
            f"| {fmt(vals['nginx'], digits)} | {fmt(rn, 2)} | {fmt(rr, 2)} |"
        )
    w("")

    # memory by phase
    def peak(s, phase):
        v = rss.get((s, phase))
        return max(v) / 1024 if v else None

    w("Resident memory (VmRSS sampled every 0.5 s), peak per phase, MiB:")
    w("")
    w("| Phase | Wharf | reference |")
    w("|---|---:|---:|")
    idle = {s: med("rss_idle_kib", s) for s in ("wharf", "reference")}
    w(f"| idle after start | {fmt(idle['wharf'] and idle['wharf'] / 1024, 1)} "
      f"| {fmt(idle['reference'] and idle['reference'] / 1024, 1)} |")
    for phase, label in PHASES:
        w(f"| {label} | {fmt(peak('wharf', phase), 1)} | {fmt(peak('reference', phase), 1)} |")
    if huge:
        before = {s: med("rss_before_huge_kib", s) for s in ("wharf", "reference")}
        w(f"| just before the {huge_label} layer | {fmt(before['wharf'] and before['wharf'] / 1024, 1)} "
          f"| {fmt(before['reference'] and before['reference'] / 1024, 1)} |")
        w(f"| push of one {huge_label} layer | {fmt(peak('wharf', 'huge-push-wharf'), 1)} "
          f"| {fmt(peak('reference', 'huge-push-reference'), 1)} |")
        w(f"| pull of one {huge_label} layer | {fmt(peak('wharf', 'huge-pull-wharf'), 1)} "
          f"| {fmt(peak('reference', 'huge-pull-reference'), 1)} |")
    end = {s: med("rss_end_kib", s) for s in ("wharf", "reference")}
    w(f"| end of run | {fmt(end['wharf'] and end['wharf'] / 1024, 1)} "
      f"| {fmt(end['reference'] and end['reference'] / 1024, 1)} |")
    w("")

    # targets
    w("Targets (from the project's issue):")
    w("")
    w("| Target | Measured | Met? |")
    w("|---|---|---|")

    def verdict(ok):
        return "n/a" if ok is None else ("**yes**" if ok else "**no**")

    for kind, name in (("mget", "GET (wrk)"), ("mhead", "HEAD (ab)"), ("mhead_wl", "HEAD (wharf-load)")):
        rw, rn, p99 = med(f"{kind}_rps", "wharf"), med(f"{kind}_rps", "nginx"), med(f"{kind}_p99_ms", "wharf")
        ok = None if None in (rw, rn, p99) else (rw >= rn and p99 < 5)
        w(f"| Manifest {name} req/s ≥ nginx, p99 < 5 ms | {fmt(rw, 0)} vs {fmt(rn, 0)} req/s "
          f"({fmt(ratio(rw, rn), 2)}×), p99 {fmt(p99, 2)} ms | {verdict(ok)} |")
    for kind, conns in (("blob1", 1), ("blob8", 8)):
        bw, bn = med(f"{kind}_MBps", "wharf"), med(f"{kind}_MBps", "nginx")
        r = ratio(bw, bn)
        w(f"| Blob pull ≥ 0.9× nginx, {conns} conn{'s' if conns > 1 else ''} | {fmt(bw, 0)} vs "
          f"{fmt(bn, 0)} MB/s ({fmt(r, 2)}×) | {verdict(None if r is None else r >= 0.9)} |")
    pw, pr = med("big_push_MBps", "wharf"), med("big_push_MBps", "reference")
    r = ratio(pw, pr)
    w(f"| Push ≥ 1.3× reference (4×64 MiB image) | {fmt(pw, 0)} vs {fmt(pr, 0)} MB/s ({fmt(r, 2)}×) "
      f"| {verdict(None if r is None else r >= 1.3)} |")
    sw, sr = med("small_push8_s", "wharf"), med("small_push8_s", "reference")
    r = ratio(sr, sw)
    w(f"| Push ≥ 1.3× reference (8 parallel small pushes; speed = reference time ÷ Wharf time) "
      f"| {fmt(sw, 2)} vs {fmt(sr, 2)} s ({fmt(r, 2)}×) | {verdict(None if r is None else r >= 1.3)} |")
    iw = idle["wharf"]
    w(f"| Wharf idle RSS < 20 MiB | {fmt(iw and iw / 1024, 1)} MiB "
      f"| {verdict(None if iw is None else iw / 1024 < 20)} |")
    if huge:
        b = med("rss_before_huge_kib", "wharf")
        pk = [p for p in (peak("wharf", "huge-push-wharf"), peak("wharf", "huge-pull-wharf")) if p is not None]
        ok = None if b is None or not pk else max(pk) - b / 1024 < FLAT_MIB
        w(f"| Wharf RSS flat during a {huge_label} layer (peak < {FLAT_MIB} MiB above the RSS before it) "
          f"| {fmt(b and b / 1024, 1)} MiB before, peak {fmt(max(pk) if pk else None, 1)} MiB "
          f"| {verdict(ok)} |")
    w("")

    w("<details><summary>Every round (raw values, round order)</summary>")
    w("")
    w("| Metric | Wharf | reference | nginx |")
    w("|---|---|---|---|")
    for m, label, better, scale, digits in ROWS:
        cells = []
        for s in SERVERS:
            v = data.get((m, s))
            cells.append(", ".join(fmt(x * scale, max(digits, 1)) for x in v) if v else "—")
        if any(c != "—" for c in cells):
            w(f"| {m} | " + " | ".join(cells) + " |")
    w("")
    w("</details>")
    w("")
    if fails:
        w("Problems recorded during the run (details in the run directory's `logs/`):")
        w("")
        for f in fails:
            w(f"- {f}")
    else:
        w("No failures recorded: every push and pull succeeded and every wrk request answered 2xx.")
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Tables and plots of a scale benchmark run (scripts/bench/scale.sh).

    python3 scripts/bench/scaleplot.py bench-out/scale-DATE [more runs...]
    python3 scripts/bench/scaleplot.py --png docs/img/scale bench-out/scale-DATE ...

Reads each run's results.tsv (backend size metric value) and rounds.tsv
(backend size kind round requests p50_us p99_us errors rps); a later run
given after an earlier one replaces the earlier's figures for the same
backend and size (so runs of separate backends or sizes can be combined).
Prints Markdown tables: per backend, one row per size, with the medians
over the rounds. With --png PREFIX, also writes PREFIX-latency.png (request
p50/p99 against the tag count, log-log) and PREFIX-resources.png (push,
startup, memory, metadata per manifest); needs matplotlib.

Owns nothing but the PNG files it is told to write; reads only the runs.
"""

import argparse
import os
import statistics
import sys
from collections import defaultdict

KINDS = [("tag", "manifest GET by tag"), ("digest", "manifest GET by digest"),
         ("hot", "GET by tag, 1,000 hot tags"),
         ("taglist", "tag list page (n=100)"), ("catalog", "catalog page (n=100)")]
ORDER = {"embedded": 0, "postgres": 1, "reference": 2}
LABEL = {"embedded": "Wharf, embedded", "postgres": "Wharf, PostgreSQL",
         "reference": "reference registry (distribution 2.8, filesystem)"}


def load(runs):
    res = {}           # (backend, size) -> {metric: value}
    rounds = {}        # (backend, size) -> {kind: [(p50, p99, rps, errors)]}
    for run in runs:
        seen = set()
        r_res = defaultdict(dict)
        with open(os.path.join(run, "results.tsv")) as f:
            for line in f:
                b, n, m, v = line.rstrip("\n").split("\t")
                r_res[(b, int(n))][m] = v
        r_rounds = defaultdict(lambda: defaultdict(list))
        path = os.path.join(run, "rounds.tsv")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    b, n, kind, _r, _req, p50, p99, errs, rps = line.rstrip("\n").split("\t")
                    r_rounds[(b, int(n))][kind].append((int(p50), int(p99), float(rps), int(errs)))
        for key in set(r_res) | set(r_rounds):
            seen.add(key)
            res[key] = r_res.get(key, {})
            rounds[key] = r_rounds.get(key, {})
    return res, rounds


def num(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def table(res, rounds):
    out = []
    backends = sorted({b for b, _ in res}, key=lambda b: ORDER.get(b, 9))
    for b in backends:
        sizes = sorted(n for bb, n in res if bb == b and n > 0)
        if not sizes:
            continue
        out.append(f"**{LABEL.get(b, b)}**\n")
        out.append("| tags | fill (manifests/s) | by tag p50 / p99 (ms) | by digest p50 / p99 | hot tags p50 / p99 |"
                   " tag list p50 / p99 | catalog p50 / p99 | req/s tag, digest, hot, list, catalog |"
                   " push p50 / p99 (ms) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in sizes:
            r, rd = res[(b, n)], rounds.get((b, n), {})
            cells = [f"{n:,}", fmt(num(r.get("fill_manifests_per_s")), 0)]
            rps = []
            for kind, _ in KINDS:
                xs = rd.get(kind, [])
                cells.append(f"{fmt_ms(med([x[0] for x in xs]))} / {fmt_ms(med([x[1] for x in xs]))}")
                rps.append(fmt(med([x[2] for x in xs]), 0))
            cells.append(", ".join(rps))
            cells.append(f"{fmt(num(r.get('push_p50_ms')))} / {fmt(num(r.get('push_p99_ms')))}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append("| tags | fill (s) | startup to /v2/ (s) | to /readyz (s) | after kill -9 mid-writes, to /v2/ (s) "
                   "| after kill -9 past a lull (s) | RSS after start (MiB) |"
                   " RSS warm / peak (MiB) | metadata (MiB) | metadata per manifest (bytes) |"
                   " whole store per manifest (bytes) | files |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in sizes:
            r = res[(b, n)]
            mib = lambda k: fmt(num(r.get(k), 0) / 1024, 0) if r.get(k) else "–"  # noqa: E731
            warm = f"{mib('rss_warm_kib')} / {mib('hwm_kib')}"
            if b == "postgres" and r.get("pg_pss_warm_kib"):
                warm += f" (+ PostgreSQL PSS {fmt(num(r['pg_pss_warm_kib']) / 1024, 0)})"
            cells = [f"{n:,}", fmt(num(r.get("fill_s")), 0), fmt(num(r.get("startup_s")), 2),
                     fmt(num(r.get("readyz_s")), 2), fmt(num(r.get("startup_crash_s")), 2),
                     fmt(num(r.get("startup_crash_lull_s")), 2),
                     mib("rss_start_kib"), warm,
                     fmt(num(r.get("meta_bytes"), 0) / 2**20, 1) if r.get("meta_bytes") else "–",
                     fmt(num(r.get("meta_bytes_per_manifest")), 0),
                     fmt(num(r.get("store_bytes_per_manifest")), 0),
                     fmt(num(r.get("files")), 0)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def ratios(res, rounds):
    """Largest size against the smallest, per backend and request kind."""
    out = ["| backend | sizes | " + " | ".join(f"{label} p50, p99" for _, label in KINDS) + " | push p50, p99 |",
           "|---|---|" + "---:|" * (len(KINDS) + 1)]
    backends = sorted({b for b, _ in res}, key=lambda b: ORDER.get(b, 9))
    for b in backends:
        sizes = sorted(n for bb, n in res if bb == b and n > 0 and rounds.get((bb, n)))
        if len(sizes) < 2:
            continue
        hi = sizes[-1]
        # From the smallest size, and from the first size whose pages are
        # full (10^5: the big repositories hold 1,000 tags, the catalog 1,010
        # repositories; below, a page holds fewer entries).
        for lo in sorted({sizes[0], *[s for s in sizes if s == 100000 and s < hi]}):
            out.append(ratio_row(res, rounds, b, lo, hi))
    return "\n".join(out)


def ratio_row(res, rounds, b, lo, hi):
    if True:
        cells = [LABEL.get(b, b), f"{lo:,} → {hi:,}"]
        for kind, _ in KINDS:
            a, z = rounds[(b, lo)].get(kind, []), rounds[(b, hi)].get(kind, [])
            if a and z:
                r50 = med([x[0] for x in z]) / max(1, med([x[0] for x in a]))
                r99 = med([x[1] for x in z]) / max(1, med([x[1] for x in a]))
                cells.append(f"{r50:.2f}×, {r99:.2f}×")
            else:
                cells.append("–")
        p = [num(res[(b, s)].get(k)) for s in (lo, hi) for k in ("push_p50_ms", "push_p99_ms")]
        cells.append(f"{p[2] / p[0]:.2f}×, {p[3] / p[1]:.2f}×" if all(p) else "–")
        return "| " + " | ".join(cells) + " |"


def plots(res, rounds, prefix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({b for b, _ in res}, key=lambda b: ORDER.get(b, 9))
    colour = {"embedded": "tab:blue", "postgres": "tab:orange", "reference": "tab:gray"}
    short = {"embedded": "embedded", "postgres": "PostgreSQL", "reference": "reference"}

    def series(b, fn):
        xs, ys = [], []
        for n in sorted(n for bb, n in res if bb == b and n > 0):
            y = fn(n)
            if y is not None:
                xs.append(n)
                ys.append(y)
        return xs, ys

    fig, axes = plt.subplots(1, len(KINDS), figsize=(15, 3.4))
    for ax, (kind, label) in zip(axes, KINDS):
        for b in backends:
            for q, style in ((0, "-"), (1, "--")):
                xs, ys = series(b, lambda n: (lambda v: v / 1000 if v is not None else None)(
                    med([x[q] for x in rounds.get((b, n), {}).get(kind, [])])))
                if xs:
                    ax.plot(xs, ys, style, marker="o", ms=3, color=colour.get(b),
                            label=f"{short.get(b, b)} {'p50' if q == 0 else 'p99'}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("tags", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (wrk, 4 connections)", fontsize=8)
    axes[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency.png", dpi=72)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    panels = [
        ("push of a small image (ms)", [("push_p50_ms", "-", "p50", 1), ("push_p99_ms", "--", "p99", 1)]),
        ("startup to /v2/ (s)", [("startup_s", "-", "", 1), ("startup_crash_s", ":", "after kill -9 mid-writes", 1),
                                  ("startup_crash_lull_s", "-.", "after kill -9 past a lull", 1)]),
        ("resident memory (MiB)", [("rss_start_kib", "--", "after start", 1024), ("rss_warm_kib", "-", "warm", 1024)]),
        ("metadata per manifest (bytes)", [("meta_bytes_per_manifest", "-", "", 1)]),
    ]
    for ax, (title, metrics) in zip(axes, panels):
        for b in backends:
            for m, style, what, div in metrics:
                xs, ys = series(b, lambda n: (lambda v: v / div if v is not None else None)(num(res[(b, n)].get(m))))
                if xs:
                    ax.plot(xs, ys, style, marker="o", ms=3, color=colour.get(b),
                            label=f"{short.get(b, b)} {what}".strip())
        ax.set_xscale("log")
        if "startup" not in title:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("tags", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(f"{prefix}-resources.png", dpi=72)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--png", help="write PREFIX-latency.png and PREFIX-resources.png")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    res, rounds = load(a.runs)
    print(table(res, rounds))
    print("Largest size against the smallest and against 10^5, where pages are full (median over the rounds; target: within 2×):\n")
    print(ratios(res, rounds))
    print()
    for run in a.runs:
        mt = os.path.join(run, "machine.txt")
        if os.path.exists(mt):
            print(f"`{run}`: " + "; ".join(l.strip() for l in open(mt) if l.strip()) + "\n")
        fails = os.path.join(run, "failures.txt")
        if os.path.exists(fails) and os.path.getsize(fails):
            print("Failures:\n\n" + "".join(f"- {l}" for l in open(fails)) + "\n")
    if a.png:
        plots(res, rounds, a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

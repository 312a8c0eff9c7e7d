#!/usr/bin/env python3
"""Plots a soak's samples and says whether anything grew after the warm-up.

    soakplot.py SAMPLES.tsv OUT.png WARMUP_SECS TITLE

SAMPLES.tsv is what scripts/bench/soak.sh writes: a `secs` column, then per
node `nodeN_rss_kib`, `nodeN_fds`, `nodeN_threads`, `nodeN_conns`, and (from
the node's metrics, when the soak sampled them) `nodeN_cache_kib` (bytes in
the manifest and small-blob caches) and `nodeN_lastknown` (entries of the
last-known maps). The plot has one panel per measure, one line per node,
and the warm-up shaded.

The verdict, printed one line per node and measure: the samples after the
warm-up are cut in thirds, and the median of the last third is compared
with the median of the first. Growth past 10% plus an allowance (16 MiB of
memory, 16 descriptors, 4 threads, 16 connections: what a burst of the load
holds for a moment) is reported as GREW and makes the exit status 1. The
caches are bounded and are expected to fill: they are plotted, not judged,
and where they were sampled the memory judged is the resident memory less
what the caches hold (the raw figure is printed and plotted too).
Owns nothing else; never changes its input.
"""

import csv
import statistics
import sys

MEASURES = [
    # column suffix, label, scale, allowance (in the scaled unit; None: not
    # judged)
    ("rss_kib", "resident memory (MiB)", 1 / 1024, 16),
    ("rss_less_cache_kib", "resident memory less caches (MiB)", 1 / 1024, 16),
    ("cache_kib", "manifest + small-blob caches (MiB)", 1 / 1024, None),
    ("lastknown", "last-known entries", 1, None),
    ("fds", "open file descriptors", 1, 16),
    ("threads", "threads", 1, 4),
    ("conns", "established TCP connections", 1, 16),
]


def read(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t")]
    # A row cut short by the sampler's stop is left out.
    rows = [r for r in rows if all(v not in (None, "") for v in r.values())]
    for r in rows:
        for k in list(r):
            if k.endswith("_cache_kib"):
                node = k.split("_")[0]
                r[f"{node}_rss_less_cache_kib"] = str(float(r[f"{node}_rss_kib"]) - float(r[k]))
    return rows


def main():
    samples, png, warmup, title = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    rows = read(samples)
    if len(rows) < 6:
        sys.exit(f"{samples}: only {len(rows)} samples")
    nodes = sorted({k.split("_")[0] for k in rows[0] if k.startswith("node")})
    secs = [float(r["secs"]) for r in rows]
    after = [i for i, s in enumerate(secs) if s >= warmup]
    if len(after) < 6:
        sys.exit(f"only {len(after)} samples after the {warmup:.0f} s warm-up")
    third = len(after) // 3
    first, last = after[:third], after[-third:]
    measures = [m for m in MEASURES if f"{nodes[0]}_{m[0]}" in rows[0]]
    # With the caches sampled, memory is judged net of them.
    net = any(m[0] == "rss_less_cache_kib" for m in measures)
    grew = False
    print(f"growth after the {warmup:.0f} s warm-up (median of the first third -> the last third "
          f"of the {len(after)} later samples; max over the whole run):")
    for node in nodes:
        for suffix, label, scale, allowance in measures:
            col = f"{node}_{suffix}"
            vals = [float(r[col]) * scale for r in rows]
            a = statistics.median(vals[i] for i in first)
            b = statistics.median(vals[i] for i in last)
            judged = allowance is not None and not (net and suffix == "rss_kib")
            bad = judged and b > a * 1.10 + allowance
            grew |= bad
            note = "  GREW" if bad else ("" if judged else "  (not judged)")
            print(f"  {node} {label}: {a:.1f} -> {b:.1f} (max {max(vals):.1f}){note}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(measures), 1, figsize=(9, 2.2 * len(measures)), sharex=True)
    minutes = [s / 60 for s in secs]
    for ax, (suffix, label, scale, _) in zip(axes, measures):
        for node in nodes:
            ax.plot(minutes, [float(r[f"{node}_{suffix}"]) * scale for r in rows], label=node, linewidth=1)
        ax.axvspan(0, warmup / 60, color="0.9", label="warm-up" if suffix == "rss_kib" else None)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, linewidth=0.3)
    axes[0].legend(fontsize=7, loc="lower right", ncol=len(nodes) + 1)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    sys.exit(1 if grew else 0)


if __name__ == "__main__":
    main()

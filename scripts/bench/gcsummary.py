#!/usr/bin/env python3
"""Markdown report of a scripts/bench/gc.sh run: `gcsummary.py RUN_DIR`."""

import statistics
import sys
from collections import defaultdict
from pathlib import Path

run = Path(sys.argv[1])
res = defaultdict(dict)
for line in (run / "results.tsv").read_text().splitlines():
    b, k, v = line.split("\t", 2)
    res[b][k] = v
chunks = defaultdict(list)  # (backend, phase, kind) -> [(n, p99_us, requests, errors, end)]
for line in (run / "chunks.tsv").read_text().splitlines():
    b, ph, n, kind, p99, reqs, errs, end = line.split("\t")
    chunks[(b, ph, kind)].append((int(n), int(p99), int(reqs), int(errs), float(end)))
machine = dict(
    line.split("=", 1) for line in (run / "machine.txt").read_text().splitlines() if "=" in line
)
fails = (run / "failures.txt").read_text().strip()


def num(b, k, default=float("nan")):
    try:
        return float(res[b][k])
    except (KeyError, ValueError):
        return default


def during(b, kind):
    """p99s of the chunks inside the pass; if none, the first chunk's."""
    n_inside = int(num(b, "pass_chunks_inside", 0))
    rows = sorted(chunks[(b, "pass", kind)])
    if n_inside > 0:
        return [r[1] for r in rows[:n_inside]], True
    return [r[1] for r in rows[:1]], False


def med_ms(vals):
    return statistics.median(vals) / 1000 if vals else float("nan")


def fmt(x, spec=".1f"):
    return "–" if x != x else format(x, spec)


print(f"# Garbage-collection benchmark ({machine.get('wharf', '?')})\n")
print(f"`{machine.get('command', '')}`\n")
print(
    f"{machine.get('nproc')} cores ({machine.get('cpu')}), {machine.get('mem')}; load average "
    f"{machine.get('loadavg_start')} at the start, {machine.get('loadavg_end')} at the end. "
    f"Loads: {machine.get('chunk_secs')} s chunks, manifests and blobs at once, "
    f"{machine.get('conns')} connections each, {machine.get('think_ms')} ms pause before each "
    "request; p99 = median over chunks (without a pass: the chunks before and after it).\n"
)
print(
    "| backend | blobs | manifests | pass (s) | reviews/s | RSS before → peak in pass (MiB) "
    "| manifest p99 without / during (ms) | ratio | blob p99 without / during (ms) | ratio |"
)
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for b in res:
    secs = num(b, "pass_seconds")
    rev = num(b, "pass_reviewed")
    cells = [b, f"{num(b, 'blobs', 0):,.0f}", f"{num(b, 'manifests', 0):,.0f}", fmt(secs),
             fmt(rev / secs if secs == secs and secs > 0 else float("nan"), ",.0f"),
             f"{fmt(num(b, 'rss_before_kib') / 1024, '.0f')} → "
             f"{fmt(max(num(b, 'rss_peak_kib'), num(b, 'hwm_pass_kib')) / 1024, '.0f')}"]
    partial = False
    for kind in ("manifest", "blob"):
        base = med_ms([r[1] for ph in ("base", "after") for r in chunks[(b, ph, kind)]])
        dur_vals, whole = during(b, kind)
        dur = med_ms(dur_vals)
        partial |= not whole
        cells.append(f"{fmt(base, '.2f')} / {fmt(dur, '.2f')}")
        cells.append(fmt(dur / base if base == base and base > 0 else float("nan"), ".2f"))
    if partial and not chunks.get((b, "alt-with", "manifest")):
        cells[0] += f" (pass covered {num(b, 'pass_cover') * 100:.0f}% of the load window)"
    print("| " + " | ".join(cells) + " |")

alt = [b for b in res if chunks.get((b, "alt-with", "manifest"))]
if alt:
    print(
        "\nAlternating short passes (ALTERNATE=1): each chunk with a pass (counted only when "
        "the pass outlasted it) has a chunk without one right after it. Ratio = median p99 with / "
        "median p99 without; pair median = the median over pairs of with / without.\n"
    )
    print("| backend | passes (outlasting their chunk) | reviews/s in the passes | kind "
          "| p99 without / with (ms) | ratio | pair median | before and after, p99 (ms) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for b in alt:
        covered = {int(k) for k in res[b].get("alt_covered_list", "").split(",") if k}
        secs, rev = num(b, "pass_seconds"), num(b, "pass_reviewed")
        for kind in ("manifest", "blob"):
            withs = {r[0]: r[1] for r in chunks[(b, "alt-with", kind)] if r[0] in covered}
            withouts = {r[0]: r[1] for r in chunks[(b, "alt-without", kind)]}
            pairs = [withs[k] / withouts[k] for k in withs if withouts.get(k)]
            w, wo = med_ms(list(withs.values())), med_ms(list(withouts.values()))
            outer = med_ms([r[1] for ph in ("base", "after") for r in chunks[(b, ph, kind)]])
            print(
                f"| {b} | {num(b, 'alt_passes', 0):.0f} ({len(covered)}) "
                f"| {fmt(rev / secs if secs > 0 else float('nan'), ',.0f')} | {kind} "
                f"| {fmt(wo, '.2f')} / {fmt(w, '.2f')} | {fmt(w / wo if wo > 0 else float('nan'), '.2f')} "
                f"| {fmt(statistics.median(pairs) if pairs else float('nan'), '.2f')} | {fmt(outer, '.2f')} |"
            )

print("\n| backend | fill (s) | unreferenced: manifests / blobs | reclaimed (contents, MiB) "
      "| exact | 2nd pass deleted | storage before → after (MiB) | `wharf check --storage` |")
print("|---|---:|---:|---:|---|---:|---:|---|")
for b in res:
    print(
        f"| {b} | {fmt(num(b, 'fill_s'), '.0f')} | {num(b, 'manifests_deleted', 0):,.0f} / "
        f"{num(b, 'blobs_unreferenced', 0):,.0f} | {num(b, 'pass_deleted', 0):,.0f}, "
        f"{fmt(num(b, 'pass_bytes_reclaimed') / 2**20, '.1f')} | {res[b].get('exact', '?')} "
        f"| {res[b].get('pass2_deleted', '?')} | {fmt(num(b, 'stored_kib_before') / 1024, '.0f')} → "
        f"{fmt(num(b, 'stored_kib_after') / 1024, '.0f')} | {res[b].get('check', '?')} |"
    )

print("\n<details><summary>Every chunk (p99 ms; requests)</summary>\n")
print("| backend | phase | kind | p99 per chunk (ms) | requests per chunk |")
print("|---|---|---|---|---|")
for (b, ph, kind), rows in sorted(chunks.items()):
    rows = sorted(rows)
    print(f"| {b} | {ph} | {kind} | {', '.join(f'{r[1] / 1000:.2f}' for r in rows)} "
          f"| {', '.join(str(r[2]) for r in rows)} |")
print("\n</details>")
print("\n<details><summary>Raw figures</summary>\n")
for b in res:
    print(f"- {b}: " + ", ".join(f"{k}={v}" for k, v in res[b].items()))
print("\n</details>")
if fails:
    print("\nFailures:\n")
    for line in fails.splitlines():
        print(f"- {line}")

"""Time per kernel over one call, from ncu --csv --metrics gpu__time_duration.sum.

usage: ncu_calls.py FILE FIRST_KERNEL
A call starts at each launch of FIRST_KERNEL; the table is the last complete
call's kernels, summed by name, in microseconds (ncu runs kernels one at a
time, so the total is above a timed call's)."""
import collections
import csv
import sys


def main():
    path, first = sys.argv[1], sys.argv[2]
    rows = [r for r in csv.reader(open(path, newline="")) if len(r) > 10]
    if len(rows) < 2:
        sys.exit(f"{path}: no kernels profiled")
    head = rows[0]
    name_at, value_at, unit_at = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
    calls = []
    for r in rows[1:]:
        name = r[name_at].split("(")[0].replace("void ", "").split("<")[0]
        if name == first:
            calls.append([])
        if calls:
            calls[-1].append((name, float(r[value_at].replace(",", "")) * scale.get(r[unit_at], 1.0)))
    if len(calls) < 2:
        sys.exit(f"{path}: fewer than two calls of {first}")
    call = calls[-2]  # the last may be cut short by --launch-count
    total, count = collections.defaultdict(float), collections.Counter()
    for name, us in call:
        total[name] += us
        count[name] += 1
    print(f"| kernel | launches | us |\n|---|---:|---:|")
    for name in sorted(total, key=lambda k: -total[k]):
        print(f"| `{name}` | {count[name]} | {total[name]:.1f} |")
    print(f"| all | {len(call)} | {sum(total.values()):.1f} |")


if __name__ == "__main__":
    main()

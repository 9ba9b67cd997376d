"""Group an Nsight Compute CSV (`ncu --metrics gpu__time_duration.sum --csv --page raw`, as the
`ncu` stage of gpu_session.sh writes it) by kernel: launches and GPU time per decode step, with
steps counted by a marker kernel that runs once a step (the remasking selection by default), over
the whole run or its last N steps.
Template arguments are dropped from the names, so a kernel's instantiations are one row."""
import argparse
import collections
import csv


def short_name(name):
    """The kernel's name without namespaces, template arguments, parameters or return type."""
    depth, out = 0, []
    for ch in name.replace("(anonymous namespace)::", ""):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            if ch == "(":
                break
            out.append(ch)
    base = "".join(out).strip().split(" ")[-1].split("::")[-1]
    if base.startswith(("Kernel", "device_kernel")):  # CUTLASS wrappers: the template names the GEMM
        return name.split("(")[0].split(" ")[-1][:90]
    return base[:90]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--marker", default="k_select_unmask", help="a kernel launched once per decode step")
    ap.add_argument("--last-steps", type=int, default=0,
                    help="only the last N steps (the run's prefill and warm-up left out); 0: the whole run")
    a = ap.parse_args()
    lines = open(a.csv).read().splitlines()
    # The profiled program's own output and ncu's notes come before the CSV's header.
    lines = lines[next(i for i, l in enumerate(lines) if l.startswith('"ID"')):]
    rows = list(csv.DictReader(lines))
    name_key = next(k for k in rows[0] if k in ("Kernel Name", "Function Name"))
    time_key = next(k for k in rows[0] if "gpu__time_duration" in k)
    launches = []
    for r in rows:
        try:
            launches.append((short_name(r[name_key]), float(r[time_key].replace(",", ""))))
        except ValueError:  # the units row under the header
            continue
    if a.last_steps > 0:  # only the kernels after the (last_steps + 1)-th marker from the end, to the last
        marks = [i for i, (n, _) in enumerate(launches) if a.marker in n]
        if len(marks) > a.last_steps:
            launches = launches[marks[-a.last_steps - 1] + 1:marks[-1] + 1]
    total, count = collections.defaultdict(float), collections.Counter()
    for n, t in launches:
        total[n] += t
        count[n] += 1
    steps = max(1, sum(c for n, c in count.items() if a.marker in n))
    grand = sum(total.values())
    print(f"{sum(count.values())} launches, {grand / 1e6:.2f} ms of GPU time, {steps} steps "
          f"({a.marker} launches): {grand / steps / 1e3:.1f} us per step")
    print("| kernel | launches per step | us each | us per step | share |\n|---|---|---|---|---|")
    for n, t in sorted(total.items(), key=lambda x: -x[1]):
        print(f"| {n} | {count[n] / steps:.1f} | {t / count[n] / 1e3:.2f} | {t / steps / 1e3:.1f} | "
              f"{t / grand:.1%} |")


if __name__ == "__main__":
    main()

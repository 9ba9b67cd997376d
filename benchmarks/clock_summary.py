"""Summarise `nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,
clocks_event_reasons.active --format=csv,noheader,nounits -lms N` samples: the busy samples' SM
clock and power (quartiles) and how often each throttle reason was active."""
import statistics
import sys

# Bits of clocks_event_reasons.active (nvml's clocksEventReasons).
REASONS = {0x1: "gpu_idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks"}


def main(path):
    rows = []
    for line in open(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            continue
        try:
            sm, mem, power, limit, temp = (float(p) for p in parts[:5])
            reasons = int(parts[5], 16)
        except ValueError:
            continue
        rows.append((sm, mem, power, limit, temp, reasons))
    busy = [r for r in rows if not r[5] & 0x1 and r[2] > 150]
    print(f"samples: {len(rows)}, busy (not idle, over 150 W): {len(busy)}")
    if not busy:
        return
    for name, i in (("sm MHz", 0), ("mem MHz", 1), ("power W", 2), ("temp C", 4)):
        q = statistics.quantiles([r[i] for r in busy], n=4, method="inclusive") if len(busy) > 1 else [busy[0][i]] * 3
        print(f"{name}: p25 {q[0]:.0f}, median {q[1]:.0f}, p75 {q[2]:.0f}, max {max(r[i] for r in busy):.0f}")
    print(f"power limit W: {busy[0][3]:.0f}")
    for bit, name in REASONS.items():
        n = sum(1 for r in busy if r[5] & bit)
        if n:
            print(f"{name}: {n} of {len(busy)} busy samples")


if __name__ == "__main__":
    main(sys.argv[1])

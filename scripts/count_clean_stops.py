"""Count the Ctrl-C tries that test/dds/test_launch.py wrote down (MOBILESAM_ROS_CTRL_C_REPORT):
clean stops per ROS distribution and case, and the slowest node exit after the signal.

Usage: python scripts/count_clean_stops.py log/ctrl-c-*.jsonl   (exit code 1 unless all clean)
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(paths: list[str]) -> int:
    tries: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                tries[(record["distro"], record["case"])].append(record)
    if not tries:
        print("no tries recorded")
        return 1
    print(f"{'distro':8} {'case':20} {'clean':>7} {'slowest exit (s)':>17}")
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (distro, case), records in sorted(tries.items()):
        clean = sum(r["clean"] for r in records)
        slowest = max((r["node_gone_after_s"] or float("inf")) for r in records)
        print(f"{distro:8} {case:20} {clean:>3}/{len(records):<3} {slowest:>17.2f}")
        totals[distro][0] += clean
        totals[distro][1] += len(records)
        for record in records:
            if not record["clean"]:
                print(f"  try {record['try']}: {'; '.join(record['problems'])}")
    for distro, (clean, count) in sorted(totals.items()):
        print(f"{distro}: {clean} of {count} Ctrl-Cs clean")
    return 0 if all(clean == count for clean, count in totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

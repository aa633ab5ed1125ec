#!/usr/bin/env python3
"""Prints an Experiment's results (kubectl get exp NAME -o json on stdin) as a readable table."""
import json
import sys

exp = json.load(sys.stdin)
status = exp.get("status", {})
results = status.get("results") or {}
base, cand = results.get("baseline") or {}, results.get("candidate") or {}


def fmt(value, unit="", digits=1):
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def mib(value):
    return None if value is None else value / 2**20


rows = [
    ("active series (mean)", fmt(base.get("series")), fmt(cand.get("series"))),
    ("distinct series", fmt(base.get("distinctSeries"), digits=0), fmt(cand.get("distinctSeries"), digits=0)),
    ("samples/s", fmt(base.get("datapointsPerSecond")), fmt(cand.get("datapointsPerSecond"))),
    ("collector CPU (cores)", fmt(base.get("collectorCpuCores"), digits=3), fmt(cand.get("collectorCpuCores"), digits=3)),
    ("collector memory (MiB)", fmt(mib(base.get("collectorMemoryBytes"))), fmt(mib(cand.get("collectorMemoryBytes")))),
    ("critical processes seen", fmt(base.get("criticalProcessesSeen"), digits=0), fmt(cand.get("criticalProcessesSeen"), digits=0)),
]
cost = results.get("estimatedMonthlyCost") or {}
if cost:
    rows.append((f"monthly cost ({cost.get('currency', '')})", fmt(cost.get("baseline"), digits=2), fmt(cost.get("candidate"), digits=2)))
print(f"{'':28}{'baseline':>14}{'candidate':>14}")
for name, b, c in rows:
    print(f"{name:28}{b:>14}{c:>14}")
print()
conf = results.get("confidence") or {}
print(f"series reduction      {fmt(results.get('seriesReductionPercent'), '%')}")
print(f"datapoint reduction   {fmt(results.get('datapointReductionPercent'), '%')}")
print(f"critical retention    {fmt(results.get('criticalRetentionPercent'), '%')}")
print(f"cost reduction        {fmt(results.get('costReductionPercent'), '%')}")
print(f"verdict               {status.get('verdict', '-')}  ({status.get('phase')}: {status.get('message', '')})")
print(f"confidence            p = {conf.get('pValue', '-')} ({conf.get('method', '-')}, {conf.get('samples', 0)} samples per variant)")
for c in results.get("criteria", []):
    mark = "PASS" if c.get("passed") else "FAIL"
    print(f"  {mark} {c['name']}: observed {fmt(c.get('observed'))}, threshold {c['threshold']}")

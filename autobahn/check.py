"""Compares a kosoku/Autobahn index.json with the expected results.

Every case must be present and its behavior and close behavior must equal
the expected ones. The expected file may say INFORMATIONAL only for cases
whose case file reports INFORMATIONAL whatever the implementation does
(7.1.6, 7.13.1, 7.13.2); everything else must be OK.

`--select "1.* 12.1.*"` (before the other arguments) limits the expected
cases to those matching the globs, as kosoku's -i selected them; every
selected case must still be present.
"""

import fnmatch
import json
import sys

ALWAYS_INFORMATIONAL = {"7.1.6", "7.13.1", "7.13.2"}


def key(case):
    return [int(p) for p in case.split(".")]


SELECT = None


def load_expected(path):
    with open(path) as f:
        expected = json.load(f)
    if SELECT is None:
        return expected
    return {c: v for c, v in expected.items() if any(fnmatch.fnmatchcase(c, g) for g in SELECT)}


def main(expected_path, index_path):
    expected = load_expected(expected_path)
    with open(index_path) as f:
        index = json.load(f)
    (agent,) = index.values()
    failures = []
    for case, want in sorted(expected.items(), key=lambda kv: key(kv[0])):
        if want != "OK" and case not in ALWAYS_INFORMATIONAL:
            failures.append(f"{case}: expected file says {want}; only OK is acceptable")
            continue
        got = agent.get(case)
        if got is None:
            failures.append(f"{case}: missing from the report")
            continue
        actual = (got["behavior"], got["behaviorClose"])
        if actual != (want, want):
            failures.append(f"{case}: {actual[0]} / close {actual[1]}, expected {want}")
    for case in sorted(set(agent) - set(expected), key=key):
        failures.append(f"{case}: ran but is not in {expected_path}")
    counts = {}
    for got in agent.values():
        counts[got["behavior"]] = counts.get(got["behavior"], 0) + 1
    print(f"autobahn: {len(agent)} cases: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items())))
    nine = {c: v["duration"] for c, v in agent.items() if c.startswith("9.")}
    if nine:
        slowest = sorted(nine.items(), key=lambda kv: -kv[1])[:3]
        print(f"autobahn: 9.x total {sum(nine.values())} ms; slowest " + ", ".join(f"{c} {d} ms" for c, d in slowest))
    if failures:
        print("autobahn: FAILED")
        for line in failures:
            print("  " + line)
        return 1
    print(f"{len(expected)} passed, 0 failed")
    return 0


def failed(expected_path, index_path):
    """Prints the ids of cases whose verdict differs from the expected one."""
    expected = load_expected(expected_path)
    with open(index_path) as f:
        (agent,) = json.load(f).values()
    bad = [c for c, want in expected.items() if (agent.get(c) or {}).get("behavior") != want
           or agent[c].get("behaviorClose") != want]
    print(" ".join(sorted(bad, key=key)))
    return 0


def merge(index_path, retry_path):
    """Replaces verdicts in index_path with those of the retry run."""
    with open(index_path) as f:
        index = json.load(f)
    with open(retry_path) as f:
        retry = json.load(f)
    (name,) = index
    (retried,) = retry.values()
    for case, verdict in retried.items():
        print(f"autobahn: retry {case}: {verdict['behavior']} / close {verdict['behaviorClose']}")
        index[name][case] = verdict
    with open(index_path, "w") as f:
        json.dump(index, f)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--select":
        SELECT = sys.argv[2].split()
        del sys.argv[1:3]
    if sys.argv[1] == "--failed":
        sys.exit(failed(sys.argv[2], sys.argv[3]))
    if sys.argv[1] == "--merge":
        sys.exit(merge(sys.argv[2], sys.argv[3]))
    sys.exit(main(sys.argv[1], sys.argv[2]))

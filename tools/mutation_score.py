"""Mutation score per core module, from the results `mutmut run` left in `mutants/` (see TESTING.md).

    python tools/mutation_score.py [--markdown] [--check] [--survivors MODULE]

Score = killed / (mutants - equivalent). A mutant no test calls ("no tests") and a surviving one both count against
the score. Equivalent mutants (no behaviour changed) are listed, one line of why each, in tests/mutation_equivalent.txt.
`--check` exits 1 when a module is below its target (90%: allocation, attacks, pruning; 80%: evaluation, mrs).
"""
import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"allocation": 0.90, "attacks": 0.90, "pruning": 0.90, "evaluation": 0.80, "mrs": 0.80}
# mutmut's own reading of a mutant's exit code ("killed", "survived", "timeout", ...; None: not checked yet)
from mutmut.stats import status_by_exit_code as STATUS


def equivalents(path: Path = ROOT / "tests" / "mutation_equivalent.txt") -> dict[str, str]:
    "Mutant name -> why it is equivalent."
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip() or line.lstrip().startswith("#"): continue
        name, _, why = line.partition("#")
        if not why.strip(): raise SystemExit(f"{path.name}: {name.strip()} has no reason (`name  # why`).")
        out[name.strip()] = why.strip()
    return out


def results(module: str) -> dict[str, str]:
    "Mutant name -> status, for one module."
    meta = ROOT / "mutants" / "robust_prune" / f"{module}.py.meta"
    if not meta.exists(): raise SystemExit(f"No mutation results for {module}: run `make mutate` first.")
    for attempt in range(5):  # a running `mutmut run` rewrites the file in place: read it again if caught half-written
        try: codes = json.loads(meta.read_text())["exit_code_by_key"]; break
        except json.JSONDecodeError:
            if attempt == 4: raise
            time.sleep(0.5)
    return {k: STATUS[v] for k, v in codes.items()}


def score(module: str, equiv: dict[str, str]) -> dict:
    res = results(module)
    c = Counter(res.values())
    eq = [k for k in res if k in equiv and res[k] != "killed"]
    killed = c["killed"] + c["timeout"]  # a timeout counts as killed, as in mutmut's own score
    scored = len(res) - len(eq)
    return dict(module=module, mutants=len(res), killed=killed, survived=c["survived"] - sum(res[k] == "survived" for k in eq),
                no_tests=c["no tests"] - sum(res[k] == "no tests" for k in eq), equivalent=len(eq),
                not_checked=sum(v in ("not checked", "skipped", "suspicious", "segfault") for k, v in res.items() if k not in eq),
                score=killed / scored if scored else float("nan"), target=TARGETS[module])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markdown", action="store_true", help="a markdown table (for TESTING.md)")
    p.add_argument("--check", action="store_true", help="exit 1 when a module misses its target")
    p.add_argument("--review", action="store_true", help="each mutant listed as equivalent, its reason and its current diff "
                   "(mutant numbers shift when a function's code changes: review the list after such a change)")
    p.add_argument("--survivors", metavar="MODULE", help="list the surviving and untested mutants of MODULE that are not marked equivalent")
    a = p.parse_args(argv)
    equiv = equivalents()
    if a.review:
        import subprocess
        for k, why in equiv.items():
            shown = subprocess.run(["mutmut", "show", k], cwd=ROOT, capture_output=True, text=True).stdout
            print(f"## {k}\n   why: {why}\n" + "\n".join(l for l in shown.splitlines() if l[:1] in "-+" and l[:3] not in ("---", "+++")))
        return 0
    if a.survivors:
        for k, v in sorted(results(a.survivors).items()):
            if v in ("survived", "no tests") and k not in equiv: print(f"{v:9s} {k}")
        return 0
    rows = [score(m, equiv) for m in TARGETS]
    stale = sorted(set(equiv) - {k for m in TARGETS for k in results(m)})
    cols = ["module", "mutants", "killed", "survived", "no_tests", "equivalent", "not_checked", "score", "target"]
    fmt = lambda r: [r["module"], *map(str, [r[c] for c in cols[1:7]]), f"{r['score']:.1%}", f"{r['target']:.0%}"]
    if a.markdown:
        print("| " + " | ".join(cols).replace("_", " ") + " |\n|" + "---|" * len(cols))
        for r in rows: print("| " + " | ".join(fmt(r)) + " |")
    else:
        print("  ".join(f"{c:>11s}" for c in cols))
        for r in rows: print("  ".join(f"{x:>11s}" for x in fmt(r)))
    if stale: print(f"note: {len(stale)} mutant(s) listed as equivalent no longer exist: {', '.join(stale[:5])}", file=sys.stderr)
    missed = [r["module"] for r in rows if not r["score"] >= r["target"] or r["not_checked"]]
    if a.check and missed: print(f"below target or not fully run: {', '.join(missed)}", file=sys.stderr); return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

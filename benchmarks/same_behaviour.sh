#!/usr/bin/env bash
# Smoke runs whose JSON must not change under a refactor (issue 14): train, run, validate and compare
# on reacher-goals (4 goals) and cartpole-physics, seed 0. Usage: same_behaviour.sh OUT_DIR
# then `python benchmarks/same_behaviour.py OLD_DIR NEW_DIR` compares them (timings ignored).
set -euo pipefail
out=${1:?usage: same_behaviour.sh OUT_DIR}
mkdir -p "$out"
python - "$out/four_goals.json" <<'PY'
import json, sys
try:
    from pgx_jax.families import FAMILIES
except ImportError:  # before issue 14
    from pgx_jax.tasks import FAMILIES
tasks = [t for t in FAMILIES["reacher-goals"].default_tasks() if t["group"] in (0, 1)]
tasks = [t for t in tasks if t["name"].endswith(("g0", "g2"))]
json.dump(tasks, open(sys.argv[1], "w"))
PY
common=(--budget smoke --groups 2 --no-progress)
for fam in reacher cartpole; do
  if [ $fam = reacher ]; then src=(--family reacher-goals --tasks-file "$out/four_goals.json"); else src=(--family cartpole-physics); fi
  pgx-jax train "${src[@]}" --budget smoke --episodes 2 --no-progress --out "$out/$fam-train"
  pgx-jax run "${src[@]}" "${common[@]}" --out "$out/$fam-run"
  pgx-jax run "${src[@]}" "${common[@]}" --evaluator gain --out "$out/$fam-run-gain"
  pgx-jax validate "${src[@]}" "${common[@]}" --truth both --out "$out/$fam-validate"
  pgx-jax compare "${src[@]}" "${common[@]}" --seeds 1 --random-draws 2 \
    --groupings multitask,random,gradient_similarity,policygradex --out "$out/$fam-compare"
done

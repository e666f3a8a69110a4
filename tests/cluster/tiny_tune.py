"""Tiny job for the launch-flow test: ``ray submit <yaml> tiny_tune.py -- STORAGE_DIR``.

Connects to the running cluster (``address="auto"``) and runs a 2-trial Ray Tune search whose results
land in ``STORAGE_DIR/tiny``; writes ``STORAGE_DIR/tiny_done.json`` last, naming the best trial.
"""

import json
import sys
from pathlib import Path

import ray
from ray import tune


def objective(config: dict) -> None:
    for step in range(3):
        tune.report({"score": config["x"] * (step + 1)})


def main() -> None:
    storage = Path(sys.argv[1]).resolve()
    ray.init(address="auto")
    tuner = tune.Tuner(
        objective,
        param_space={"x": tune.grid_search([1.0, 2.0])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=tune.RunConfig(name="tiny", storage_path=str(storage)),
    )
    results = tuner.fit()
    best = results.get_best_result()
    summary = {
        "n_trials": len(results),
        "errors": len(results.errors),
        "best_x": best.config["x"],
        "best_score": best.metrics["score"],
        "nodes": len(ray.nodes()),
    }
    (storage / "tiny_done.json").write_text(json.dumps(summary))
    print("tiny done", summary)


if __name__ == "__main__":
    main()

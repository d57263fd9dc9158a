"""Synthetic logged runs for the table and figure tests."""

import json
from pathlib import Path

import pandas as pd
import yaml

from vae.config import make_config


def fake_run(results: Path, sweep: str, name: str, rows: list[tuple[int, float, float]], complete: bool = True,
             metric: str = "elbo", **config) -> Path:
    folder = results / "runs" / sweep / name
    folder.mkdir(parents=True)
    cfg = make_config({"samples": rows[-1][0] if complete else 10**8, **config}).to_dict()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    pd.DataFrame(rows, columns=["samples", f"train/{metric}", f"test/{metric}"]).to_csv(folder / "metrics.csv", index=False)
    (folder / "status.json").write_text(json.dumps({"samples": rows[-1][0]}))
    return folder

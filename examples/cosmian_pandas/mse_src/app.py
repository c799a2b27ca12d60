"""Merge and join two tables with pandas, as written for Cosmian Enclave's mse-ds image."""

import numpy as np
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/health")
def health() -> tuple[str, int]:
    return "", 200


@app.get("/versions")
def versions() -> dict:
    return {"pandas": pd.__version__, "numpy": np.__version__}


@app.post("/merge")
def merge() -> tuple[object, int]:
    """Inner-join two tables (lists of records) on ``on``; the mean of ``value`` per key."""
    body = request.get_json(silent=True) or {}
    try:
        left = pd.DataFrame(body["left"])
        right = pd.DataFrame(body["right"])
        on = str(body["on"])
        joined = pd.merge(left, right, on=on, how="inner")
    except (KeyError, TypeError, ValueError) as exc:
        return jsonify({"error": str(exc)}), 400
    means = joined.groupby(on)["value"].mean().round(6)
    return jsonify(
        {
            "rows": int(len(joined)),
            "columns": sorted(joined.columns),
            "mean_value": {str(k): float(v) for k, v in means.items()},
        }
    ), 200

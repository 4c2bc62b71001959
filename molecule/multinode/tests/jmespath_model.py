"""A pyfunc model from code (MLflow "models from code") that needs a package
neither MLflow nor the serving tier's base brings: jmespath, pinned in its
requirements. test_serving.py registers it; the serving hosts install it."""

from __future__ import annotations

from typing import Any

import jmespath
import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class Lookup(PythonModel):
    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        rows = model_input.to_dict(orient="records")
        return [f"jmespath {jmespath.__version__}: {jmespath.search('x', row)}" for row in rows]


mlflow.models.set_model(Lookup())

"""``train.report_to``: a run's config and metrics sent to the experiment trackers Accelerate drives
(TensorBoard, MLflow, Weights & Biases, ...).

``metrics.json`` stays the record of a run; the trackers get a copy as it goes: the resolved
config at the start, the loss and learning rate of every step (``train/``), each dev evaluation
(``dev/``) and the final test metrics (``test/``). Accelerate's trackers log on the main process
only. Local trackers write under the run directory's ``trackers/`` folder: TensorBoard its event
files, MLflow (unless ``MLFLOW_TRACKING_URI`` or the program chose a store) an SQLite store,
``trackers/mlflow.db``, that ``mlflow ui --backend-store-uri sqlite:///RUN/trackers/mlflow.db`` shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ConfigError

TRACKERS_DIR = "trackers"
#: The package each tracker needs, for the error that says what to install.
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny sqlalchemy alembic", "wandb": "wandb", "comet_ml": "comet-ml",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def check_trackers(names: list[str]) -> None:
    """A clear error for a tracker Accelerate does not know, or whose package is not installed."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(getattr(tracker, "value", tracker)) for tracker in get_available_trackers()}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"train.report_to: unknown tracker '{name}'; Accelerate's trackers: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
        if name not in available:
            raise ConfigError(f"train.report_to: '{name}' needs its package: pip install {PACKAGES.get(name, name)}")


def flat(config: dict, prefix: str = "") -> dict:
    """The config as ``{"train.lr": 5e-05, ...}`` with plain values (what hyperparameter tables take)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


_store_we_chose: str | None = None  # the MLflow store lccore set for a run (not the user's choice)


def start(accelerator, names: list[str], config: dict, output_dir: Path):
    """Open a run in each tracker, named after the run directory, with the resolved config;
    returns the function that closes them when the run ends."""
    global _store_we_chose
    if not names:
        return lambda: None
    folder = output_dir / TRACKERS_DIR
    init_kwargs = {"mlflow": {"run_name": output_dir.name, "logging_dir": str(folder / "mlflow-artifacts")}}
    chose_store = False
    if "mlflow" in names and accelerator.is_main_process:
        import mlflow

        current = mlflow.get_tracking_uri() if is_store_set() else None
        if current is None or current == _store_we_chose:  # mlflow's own default would be ./mlflow.db, wherever the user stands
            folder.mkdir(parents=True, exist_ok=True)
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
            _store_we_chose = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
            mlflow.set_tracking_uri(_store_we_chose)
            chose_store = True
    accelerator.init_trackers(output_dir.name, config=flat(config), init_kwargs=init_kwargs)

    def finish() -> None:
        global _store_we_chose
        for tracker in accelerator.trackers:  # not accelerator.end_training(): it also ends the process group
            tracker.finish()
        if chose_store:  # mlflow keeps the store in the process (and its environment): give it back
            import mlflow

            mlflow.set_tracking_uri(None)
            _store_we_chose = None

    return finish


def is_store_set() -> bool:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    return is_tracking_uri_set()


def log(accelerator, names: list[str], split: str, values: dict, step: int) -> None:
    """``values`` (numbers only) under ``split/`` at ``step``."""
    if names:
        numbers = {f"{split}/{key}": value for key, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch")}
        accelerator.log(numbers, step=step)

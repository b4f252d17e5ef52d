"""``train.report_to``: a run's config and metrics sent to the experiment trackers Accelerate drives
(TensorBoard, MLflow, Weights & Biases, ...).

``metrics.json`` stays the record of a run; the trackers get a copy as it goes: the resolved
config at the start, the loss and learning rate of every step (``train/``), each dev evaluation
(``dev/``) and the final test metrics (``test/``). Accelerate's trackers log on the main process
only. Local trackers write under the run directory's ``trackers/`` folder: TensorBoard its event
files, MLflow (unless ``MLFLOW_TRACKING_URI`` or the program chose a store) an SQLite store,
``trackers/mlflow.db``, that ``mlflow ui --backend-store-uri sqlite:///RUN/trackers/mlflow.db`` shows.

A resumed run continues the tracker runs it had: MLflow's by the run id kept in
``trackers/runs.json``, TensorBoard's in the same folder, where the steps logged after the
checkpoint by the interrupted session are purged (``SummaryWriter(purge_step=...)``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ConfigError

TRACKERS_DIR = "trackers"
RUN_IDS_FILE = "runs.json"
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


def start(accelerator, names: list[str], config: dict, output_dir: Path, *, resumed_after: int | None = None):
    """Open a run in each tracker, named after the run directory, with the resolved config, or
    continue the interrupted session's (``resumed_after``: the step of the checkpoint it resumes
    from); returns the function that closes them when the run ends."""
    global _store_we_chose
    if not names:
        return lambda: None
    folder = output_dir / TRACKERS_DIR
    init_kwargs = {"mlflow": {"run_name": output_dir.name, "logging_dir": str(folder / "mlflow-artifacts")}}
    if resumed_after is not None:
        init_kwargs["tensorboard"] = {"purge_step": resumed_after + 1}  # the steps the interrupted session logged after the checkpoint
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
    if "mlflow" in names and accelerator.is_main_process and resumed_after is not None and (run_id := earlier_run_id(folder)):
        init_kwargs["mlflow"]["run_id"] = run_id
    accelerator.init_trackers(output_dir.name, config=flat(config), init_kwargs=init_kwargs)
    if "mlflow" in names and accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        run_id = accelerator.get_tracker("mlflow", unwrap=True).info.run_id
        (folder / RUN_IDS_FILE).write_text(json.dumps({"mlflow": run_id}), encoding="utf-8")

    def finish() -> None:
        global _store_we_chose
        for tracker in accelerator.trackers:  # not accelerator.end_training(): it also ends the process group
            tracker.finish()
        if chose_store:  # mlflow keeps the store in the process (and its environment): give it back
            import mlflow

            mlflow.set_tracking_uri(None)
            _store_we_chose = None

    return finish


def earlier_run_id(folder: Path) -> str | None:
    """The MLflow run an interrupted session of this run opened, if the store still has it."""
    try:
        run_id = json.loads((folder / RUN_IDS_FILE).read_text(encoding="utf-8"))["mlflow"]
        import mlflow

        mlflow.tracking.MlflowClient().get_run(run_id)
    except Exception:  # noqa: BLE001 - no file, a damaged one, a run deleted from the store: a new run
        return None
    return run_id


def is_store_set() -> bool:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    return is_tracking_uri_set()


def log(accelerator, names: list[str], split: str, values: dict, step: int) -> None:
    """``values`` (numbers only) under ``split/`` at ``step``."""
    if names:
        numbers = {f"{split}/{key}": value for key, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch")}
        accelerator.log(numbers, step=step)

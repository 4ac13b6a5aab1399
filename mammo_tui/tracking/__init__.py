"""Tracking export: a run's events to MLflow or TensorBoard, live (`--track`, config `track`) or
afterwards (`mammo-tui export`).

A tracker is an event sink. `spec` parses `mlflow:DIR_OR_URI` / `tensorboard:DIR` (pure);
`sinks.open_trackers` gives the trainer guarded trackers (a failing one warns once and stops,
training goes on); `export` replays a run directory's events.jsonl through the same trackers.
mlflow / tensorboard are optional extras and imported only when a tracker opens.
"""

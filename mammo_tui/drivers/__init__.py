"""Drivers: ways to run the engine many times (cross-validation, sweeps).

They sit above the engine (`engine/`) and the run-directory layer (`rundir.py`, `runlog.py`);
neither of those imports a driver. A driver's folder is recognised by its manifest file
(rundir.MANIFEST_FILES), which the run-directory layer reads without importing the driver.
"""

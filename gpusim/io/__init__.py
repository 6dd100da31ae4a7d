"""Run state in and out: the checkpoint's capture and restore (the Zarr run store builds on them)."""

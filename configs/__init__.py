"""Hydra configs shipped with wmrobot: one file per command; groups env/ model/ planner/ ..."""

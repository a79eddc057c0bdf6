"""Evaluation in the real environment: batched rollouts, decision latency, videos."""

from wmrobot.eval.rollout import EpisodeRecord, decision_latency_ms, evaluate, record_video

__all__ = ["EpisodeRecord", "decision_latency_ms", "evaluate", "record_video"]

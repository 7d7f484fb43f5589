"""The hot path: a policy compiled into one function, and the Labeler around it."""

from activelabel.engine.decision import Decision
from activelabel.engine.labeler import Labeler, LabelerStats, PolicyTestResult

__all__ = ["Decision", "Labeler", "LabelerStats", "PolicyTestResult"]

"""The hot path: a policy compiled into one function, and the Labeler around it.

``compile_policy`` (plan → index → generate → exec) gives a ``CompiledPolicy``; the
``Labeler`` wraps one with the public surface; ``RecordLoop`` (engine/record_loop.py)
is the decode → label → write | dead-letter loop every front door runs.
"""

from activelabel.engine.compile import CompiledPolicy, compile_policy
from activelabel.engine.decision import Decision
from activelabel.engine.labeler import Labeler, LabelerStats, LinesResult, PolicyTestResult

__all__ = ["CompiledPolicy", "Decision", "Labeler", "LabelerStats", "LinesResult", "PolicyTestResult", "compile_policy"]

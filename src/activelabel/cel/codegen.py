"""The former name of :mod:`activelabel.cel.emit` (the CEL → Python expression emitter).

Kept so existing imports (``from activelabel.cel.codegen import PythonEmitter, MISSING``)
keep working; new code imports from :mod:`activelabel.cel.emit`.
"""

from activelabel.cel.emit import MISSING, CompiledFunction, NeedsExactEvaluation, PythonEmitter, compile_function

__all__ = ["MISSING", "CompiledFunction", "NeedsExactEvaluation", "PythonEmitter", "compile_function"]

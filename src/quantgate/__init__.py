"""quantgate: decide whether a quantized LLM still reasons as well and runs as fast as its BF16 original.

The core library holds data models, readers, the statistical judge and the replay logic. It imports
neither pytest nor any heavy runtime (torch, vLLM): the pytest glue lives in ``plugins/``, and the tools
run as subprocesses.
"""

from quantgate.errors import QuantgateError

__all__ = ["QuantgateError", "__version__"]
__version__ = "0.1.0"

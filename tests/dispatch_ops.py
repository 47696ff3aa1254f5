"""Which ATen ops a block of code dispatches: ``with CountOps() as ops: ...``, then ``ops.ops``
(op names without overload, in call order). Used to prove a fused path ran (an op is absent)."""

from torch.utils._python_dispatch import TorchDispatchMode


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))

"""The one exception type of ``cuda_ops`` (it must not depend on ``sadpipe``)."""


class LossInputError(ValueError):
    """A bad argument to a ``cuda_ops`` loss: the message is one line, ``<argument>: <problem>``."""

    def __init__(self, argument, problem):
        super().__init__(f"{argument}: {problem}")
        self.argument = argument

"""Exceptions of the ``shards`` package: all ``ValueError`` subclasses with one-line messages.

``shards`` must not import ``sadpipe``; sadpipe's commands catch :class:`ShardError` and
re-raise it as ``sadpipe.errors.UserError`` (one line, exit status 1, no traceback).
"""


class ShardError(ValueError):
    """Base class. The message is one line: ``"<where>: <what is wrong>"``."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class CodecError(ShardError):
    """Arrays handed to the codec (or read back from a shard) are malformed."""


class ShardMismatchError(ShardError):
    """Shards were made with other settings than the ones in use (``"<dotted field>: ..."``)."""


class ManifestError(ShardError):
    """``manifest.json`` (or a rank's progress file) is missing, malformed or edited by hand."""


class ChecksumError(ShardError):
    """A sample's members do not match its checksum:
    ``"shard NAME, sample KEY: checksum mismatch"``."""


class CorruptShardError(ShardError):
    """A shard cannot be read: truncated or damaged tar, missing members, non-finite scores."""

"""Dependencies point one way: ``shards`` imports nothing of ``sadpipe``, and of ``cuda_ops``
only ``cuda_ops.fastmath`` (the float32 maths its encoder shares with the loss kernels),
which imports nothing else of ``cuda_ops``."""
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
import shards, shards.bench, shards.quality, shards.encode
allowed = {"cuda_ops", "cuda_ops.fastmath"}
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("sadpipe", "cuda_ops") and m not in allowed)
print(",".join(bad))
"""


def test_shards_imports_no_sadpipe_and_only_the_maths_of_cuda_ops():
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=repo, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(repo), "PATH": ""})
    assert out.stdout.strip() == ""

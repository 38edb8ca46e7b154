"""Dependencies point one way: ``shards`` imports nothing of ``sadpipe``, and of ``cuda_ops``
only ``cuda_ops.fastmath`` (the float32 maths its encoder shares with the loss kernels) and
``cuda_ops.constants`` (the ADL's defaults), which import nothing else of ``cuda_ops``; and none
of these imports torch (webdataset, the tar layer, loads it when installed but does without)."""
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
sys.modules["torch"] = None  # every `import torch` fails; webdataset (the tar layer) does without
import cuda_ops.constants
import shards, shards.bench, shards.quality, shards.encode
allowed = {"cuda_ops", "cuda_ops.fastmath", "cuda_ops.constants"}
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("sadpipe", "cuda_ops") and m not in allowed)
print(",".join(bad))
"""


def test_shards_imports_no_sadpipe_no_torch_and_only_fastmath_and_constants_of_cuda_ops():
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=repo, capture_output=True,
                         text=True, env={"PYTHONPATH": str(repo), "PATH": ""})
    assert out.returncode == 0, out.stderr  # an import of torch fails with ModuleNotFoundError
    assert out.stdout.strip() == ""

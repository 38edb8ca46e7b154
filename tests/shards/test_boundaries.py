"""Dependencies point one way: ``shards`` imports neither ``sadpipe`` nor ``cuda_ops``."""
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
import shards, shards.bench, shards.quality
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("sadpipe", "cuda_ops"))
print(",".join(bad))
"""


def test_shards_imports_neither_sadpipe_nor_cuda_ops():
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=repo, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(repo), "PATH": ""})
    assert out.stdout.strip() == ""

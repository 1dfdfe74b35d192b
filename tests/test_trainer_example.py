"""The README's "Fine-tune with it" example, run exactly as written: a prefix trained with the Hugging
Face Trainer, gradient checkpointing on, in bf16, on a tiny random model (CPU)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fine-tune with it", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_is_found():
    code = readme_example()
    assert "Trainer(" in code and "gradient_checkpointing=True" in code and "bf16" in code


def test_readme_trainer_example_trains_a_prefix(tmp_path):
    (tmp_path / "example.py").write_text(readme_example())
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"loss ([\d.]+) -> ([\d.]+); checkpointing (\w+); prefix dtype (\S+)", out.stdout)
    assert m, out.stdout[-2000:]
    first, last, checkpointing, dtype = float(m[1]), float(m[2]), m[3], m[4]
    assert last < first, f"the Trainer did not lower the loss: {first} -> {last}"
    assert checkpointing == "True" and dtype == "torch.bfloat16"
    assert (tmp_path / "out" / "prefix" / "prefix_model.safetensors").exists()

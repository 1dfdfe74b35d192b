import sys
from pathlib import Path

# Shared helpers of the tests (remote_code.py) import by plain name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
os.environ.setdefault("PIPEALGOS_PIPE_TIMEOUT", "20")

from hypothesis import settings  # noqa: E402

# CI replays a fixed set of examples (a red CI must mean a real regression, reproducible);
# local runs keep exploring new random examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

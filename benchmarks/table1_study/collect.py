"""Copy every finished study run's metrics.json into benchmarks/results/table1_study/<distortion>-<run>.json."""
import json
import shutil
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
dest = Path(__file__).resolve().parents[1] / "results" / "table1_study"
dest.mkdir(parents=True, exist_ok=True)
for m in sorted(root.glob("*/*/metrics.json")):
    if json.loads(m.read_text()).get("status") == "finished":
        target = dest / f"{m.parent.parent.name}-{m.parent.name}.json"
        if not target.exists() or target.read_bytes() != m.read_bytes():
            shutil.copyfile(m, target)
            print(target)

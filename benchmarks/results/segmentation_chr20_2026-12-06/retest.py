"""Re-test the selected checkpoints of a segmentation protocol run with the current metrics."""
import json
import sys
from pathlib import Path
from hnet_dna.cli import build_cli
out = Path(sys.argv[1])
result = json.loads((out / "results.json").read_text())
rows = []
for run in result["runs"]:
    cli = build_cli(["--config", "pipelines/finetune/chr20_annotation.yaml", "--trainer.logger", "false",
                     "--trainer.enable_progress_bar", "false", "--data.sample_seed", str(run["seed"])])
    from hnet_dna.tasks import SegmentationModule
    module = SegmentationModule.load_from_checkpoint(run["checkpoint"], map_location="cpu")
    test = cli.trainer.test(module, datamodule=cli.datamodule, verbose=False)[0]
    rows.append({**{k: run[k] for k in ("system", "seed", "checkpoint", "val_mcc", "epochs", "optimizer_steps", "training_flops", "wall_seconds", "trainable_parameters", "total_parameters")},
                 "test": {k: float(v) for k, v in test.items()}})
(out / "retest.json").write_text(json.dumps(rows, indent=1))
print("done", out)

"""``python -m training reproduce``: a shipped artifact and a rerun scored side by side."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np


def test_reproduce_scores_both_runs_and_records_the_difference(trained, image_folder, tmp_path, capsys):
    from training.cli import main

    reference = shutil.copytree(trained["artifact"], tmp_path / "reference")
    rerun = shutil.copytree(trained["artifact"], tmp_path / "rerun")
    assert main(["reproduce", str(reference), str(rerun), "--data", str(image_folder), "--split", "test",
                 "--device", "test machine"]) == 0
    record = json.loads((reference / "report" / "reproduction.json").read_text())
    assert record["reproduced"] is True and record["top1_difference_points"] == 0.0
    assert record["runs"]["reference"]["top1"] == record["runs"]["rerun"]["top1"]
    assert record["runs"]["rerun"]["device"] == "test machine" and record["runs"]["reference"]["images"] == 6
    assert record["runs"]["reference"]["command"] and "reproduced" in capsys.readouterr().out

    # A rerun whose head was scrambled answers differently: not reproduced, and the exit status says so.
    model = keras.saving.load_model(rerun / "model.keras", compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    model.save(rerun / "model.keras")
    out = tmp_path / "record.json"
    assert main(["reproduce", str(reference), str(rerun), "--data", str(image_folder), "--split", "test",
                 "--tolerance", "0", "--out", str(out)]) == 1
    scrambled = json.loads(out.read_text())
    assert scrambled["reproduced"] is False and scrambled["runs"]["rerun"]["top1"] < scrambled["runs"]["reference"]["top1"]
    assert "NOT reproduced" in capsys.readouterr().out

"""`kwscompress demo --quick` end to end: synthetic data, micro features, training, evaluation,
estimate, profile and report, in a fresh process as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kwscompress import Pipeline
from kwscompress.cli import main
from kwscompress.config import Config, quick_overrides
from kwscompress.errors import KwsError


def _demo(out: Path, cache: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {**os.environ, "KWSCOMPRESS_CACHE": str(cache), "KWSCOMPRESS_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / "demo-quick" / "results.json").read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("e2e")
    _, results = _demo(base / "runs", base / "cache")
    return base, results


def test_results_hold_every_stage(first_run: tuple[Path, dict]) -> None:
    _, results = first_run
    assert results["schema"] == 2
    stages = ("data", "features", "train", "evaluate", "compress", "export", "mcu", "deploy")
    for stage in (*stages, "estimate", "profile", "report"):
        assert stage in results, stage
        assert results[stage]["seconds"] >= 0
    assert "finished" in results and results["plugin_errors"] == []
    assert results["report"]["errors"] == []


def test_split_summary_and_per_class_tables(first_run: tuple[Path, dict]) -> None:
    _, results = first_run
    labels = ["_silence_", "_unknown_", "yes", "no"]
    assert results["data"]["labels"] == labels
    summary = results["data"]["split_summary"]
    for split in ("training", "validation", "testing"):
        row = summary[split]
        assert row["total"] == sum(row[label] for label in labels) > 0
        table = results["evaluate"]["per_class"][split]
        assert [table[label]["samples"] for label in labels] == [row[label] for label in labels]
        assert table["total"]["samples"] == row["total"]
    assert results["data"]["skipped_count"] == 0


def test_training_history_and_checkpoint(first_run: tuple[Path, dict]) -> None:
    base, results = first_run
    train = results["train"]
    assert train["model"] == "tc_ds_cnn" and train["parameters"] == 27780
    assert [h["epoch"] for h in train["history"]] == list(range(1, 11))
    assert (base / "runs" / "demo-quick" / train["checkpoint"]).is_file()
    # The features name the words the training examples say; --quick trains without the word
    # head (the plain recipe: test_the_word_head_trains_through_the_pipeline has it).
    words = results["features"]["words"]
    assert {"_silence_", "yes", "no"} <= set(words) and len(words) > 10
    assert train["word_classes"] == 0
    accuracy = results["evaluate"]["accuracy"]
    assert set(accuracy) == {"training", "validation", "testing"}
    # Ten short epochs on 81 clips fit them (25 % would be guessing among four classes); the
    # 12 test clips of one or two unseen speakers are too few to ask more of than a number.
    assert accuracy["training"] > 0.8


def test_generalisation_checks_are_recorded(first_run: tuple[Path, dict]) -> None:
    _, results = first_run
    clips = results["evaluate"]["reference_clips"]["clips"]
    assert [c["file"] for c in clips] == [
        "yes_1000ms.wav",
        "no_1000ms.wav",
        "noise_1000ms.wav",
        "silence_1000ms.wav",
    ]
    assert all(abs(sum(c["scores"].values()) - 1) < 1e-4 for c in clips)
    held_out = results["evaluate"]["held_out_voices"]
    assert held_out["families"] and held_out["held_out_samples"] > 0


def test_estimate_profile_and_report(first_run: tuple[Path, dict]) -> None:
    base, results = first_run
    assert results["estimate"]["total"]["parameters"] == 27780
    assert results["estimate"]["total"]["macs"] == 605504
    assert results["profile"]["median_ms"] > 0
    html = base / "runs" / "demo-quick" / results["report"]["html"]
    assert html.is_file() and "data:image/png;base64," in html.read_text()


def test_a_checkpoint_loads_back_into_a_pipeline(first_run: tuple[Path, dict]) -> None:
    base, results = first_run
    checkpoint = base / "runs" / "demo-quick" / results["train"]["checkpoint"]
    config = (
        Config().updated(quick_overrides()).updated({"run": {"cache_dir": str(base / "cache")}})
    )
    pipe = Pipeline(config, run_dir=base / "reloaded")
    with pytest.raises(KwsError, match=r"no checkpoint at .*reloaded/checkpoints/tc_ds_cnn\.pt"):
        pipe.load_model()
    pipe.load_model(checkpoint)
    assert pipe.evaluate()["accuracy"] == results["evaluate"]["accuracy"]
    three = Pipeline(
        config.updated({"data": {"wanted_words": ["yes", "no", "up"]}}), run_dir=base / "three"
    )
    with pytest.raises(KwsError, match="weights of the configured model 'tc_ds_cnn' with 5 "):
        three.load_model(checkpoint)
    (base / "notes.pt").write_text("not weights")
    with pytest.raises(KwsError, match=r"notes\.pt is not a PyTorch checkpoint"):
        pipe.load_model(base / "notes.pt")


def test_the_word_head_trains_through_the_pipeline(first_run: tuple[Path, dict]) -> None:
    base, results = first_run
    config = (
        Config()
        .updated(quick_overrides())
        .updated({"run": {"cache_dir": str(base / "cache")}, "train": {"word_head": 0.25}})
    )
    pipe = Pipeline(config, run_dir=base / "word-head")
    model = pipe.train()
    train = pipe.run_record.results["train"]
    # Every word of the cached features is a class of the head; the checkpoint is the model's
    # alone and loads into a fresh pipeline, which predicts as the trained one does.
    assert train["word_classes"] == len(results["features"]["words"])
    assert train["parameters"] == results["train"]["parameters"]
    again = Pipeline(config, run_dir=base / "word-head-again")
    loaded = again.load_model(base / "word-head" / train["checkpoint"])
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert again.evaluate(model=loaded)["accuracy"] == pipe.evaluate(model=model)["accuracy"]


def test_second_run_reuses_dataset_and_features(first_run: tuple[Path, dict]) -> None:
    base, first = first_run
    assert first["features"]["cache_hit"] is False
    _, second = _demo(base / "runs2", base / "cache")
    assert second["features"]["cache_hit"] is True
    assert second["data"]["root"] == first["data"]["root"]
    # Same config and seed: the same training, to the last digit.
    assert second["train"]["history"] == [
        {**h, "seconds": s["seconds"]}
        for h, s in zip(first["train"]["history"], second["train"]["history"], strict=True)
    ]
    assert second["evaluate"]["accuracy"] == first["evaluate"]["accuracy"]
    # The exports are shared between the run's process and a spawned helper in whatever split
    # the timing gives; every file is the same bytes either way.
    exports = [base / runs / "demo-quick" / "export" for runs in ("runs", "runs2")]
    files = sorted(p.relative_to(exports[0]) for p in exports[0].rglob("*") if p.is_file())
    assert len(files) >= 6
    for name in files:
        assert (exports[1] / name).read_bytes() == (exports[0] / name).read_bytes(), name


def test_sweep_rows_exports_and_firmware(first_run: tuple[Path, dict]) -> None:
    base, results = first_run
    rows = {row["id"]: row for row in results["variants"]}
    assert list(rows) == [
        "float",
        "ptq-4b",
        "ptq-8b",
        "qat-4b",
        "qat-8b",
        "magnitude-0.5-ft0",
        "magnitude-0.5-ft1",
        "channel-0.5-ft0",
        "channel-0.5-ft1",
    ]
    assert all(row["status"] == "ok" for row in rows.values()), [
        row["error"] for row in rows.values()
    ]
    # Half of tc_ds_cnn's 64 filters go: stem 3*40*32 + 2*32, four blocks of 9*32 + 2*32 +
    # 32*32 + 2*32 (depthwise and pointwise with their batch norms), fc 32*4 + 4.
    channel = 3 * 40 * 32 + 64 + 4 * (9 * 32 + 64 + 32 * 32 + 64) + 32 * 4 + 4
    assert rows["channel-0.5-ft0"]["parameters"] == channel == 9796
    assert rows["magnitude-0.5-ft0"]["nonzero_parameters"] < 0.55 * 27780
    assert rows["ptq-4b"]["weight_bytes"] < rows["ptq-8b"]["weight_bytes"] < 27780 * 4
    # Every variant's rejection is measured as the trained model's is; the float row's is its.
    for key in ("rejection", "robustness", "held_out_voices"):
        assert rows["float"][key] == results["evaluate"][key]
        assert all(key in row for row in rows.values())
    run_dir = base / "runs" / "demo-quick"
    for variant in ("float", "ptq-8b", "qat-8b"):
        tflite = rows[variant]["export"]["tflite"]
        assert tflite["status"] == "ok"
        assert tflite["input"]["dtype"] == tflite["output"]["dtype"] == "int8"
        if variant != "float":
            # The Brevitas bridge: TFLM computes exactly the integer graph of the variant.
            assert tflite["route"] == "bridge"
            assert tflite["tflm_vs_int_graph"]["logits_differ"] == 0
            assert tflite["model_agreement"]["top1_agree"] >= 0.9
        assert (
            rows[variant]["deploy"]["tflite_bytes"]
            == (run_dir / tflite["dir"] / tflite["files"]["tflite"]).stat().st_size
        )
        assert rows[variant]["deploy"]["arena_bytes"] > 0
    assert rows["float"]["export"]["onnx"]["agrees"] is True
    sketch = Path(rows["qat-8b"]["deploy"]["firmware"])
    assert (sketch / "kws_qat_8b" / "kws_qat_8b.ino").is_file()
    # The deployed variant ran on the same streams as the trained model (same words, same
    # length) and the firmware takes the recognizer tuned for it, when that one is usable.
    own = rows["qat-8b"]["stream"]
    assert own["hours"] == results["stream"]["hours"]
    assert own["streams"]["testing"]["words"] == results["stream"]["streams"]["testing"]["words"]
    assert own["hits"] + own["misses"] == results["stream"]["hits"] + results["stream"]["misses"]
    source = rows["qat-8b"]["deploy"]["recognizer_source"]
    usable = own["tuned"] and own["validation_at_chosen"]["false_reject_rate"] <= 0.5
    halves = [r for r in own["streams"]["validation"]["det"] if r["false_reject_rate"] <= 0.5]
    expected = (
        "tuned on variant qat-8b's"
        if usable
        else "variant qat-8b's validation stream: threshold"
        if own["tuned"] and halves
        else "[recognizer] config"
    )
    assert source.startswith(expected), source
    html = (run_dir / "report.html").read_text()
    for section in ("variants", "quantization", "pruning", "deployment"):
        assert f'id="{section}"' in html, section


def test_the_saved_stream_scores_as_a_recording_as_the_deploy_stage_scored_it(
    first_run: tuple[Path, dict],
) -> None:
    from kwscompress.stages.recording import score_recording, summary_lines

    base, results = first_run
    run_dir = base / "runs" / "demo-quick"
    folder = run_dir / "stream"
    own = {row["id"]: row for row in results["variants"]}["qat-8b"]["stream"]
    settings = own["recognizer"]
    out = base / "testing.qat-8b.json"
    command = [
        sys.executable, "-m", "kwscompress.cli", "stream", str(run_dir),
        str(folder / "testing.wav"), "--labels", str(folder / "testing.words.txt"),
        "--variant", "qat-8b", "--threshold", str(settings["detection_threshold"]),
        "--window-ms", str(settings["average_window_ms"]), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"record: {out}" in done.stdout
    record = json.loads(out.read_text())
    lines = summary_lines(record, str(run_dir))  # its wording is tested in test_stream
    report_hint = f"(`kwscompress report {run_dir}` adds it to the run's report)"
    assert done.stdout == "\n".join([*lines, f"record: {out}", report_hint, ""])
    # The stream as saved (16-bit, as the device hears it) and its Audacity labels, read back,
    # are the stream the variant was tuned on: the same words, and the same DET to the digit.
    testing = own["streams"]["testing"]
    assert record["hours"] == own["hours"]
    assert record["words"] == testing["words"] and testing["words"]["keyword"] > 0
    assert record["det"] == testing["det"]
    for key in ("hits", "misses", "false_accepts", "false_reject_rate"):
        assert record[key] == own[key], key
    # Without labels every keyword detection is a false accept of that room.
    unlabelled, path = score_recording(
        run_dir, folder / "testing.wav", variant="qat-8b", out=base / "unlabelled.json",
        threshold=settings["detection_threshold"], window_ms=settings["average_window_ms"],
    )  # fmt: skip
    assert path == base / "unlabelled.json"
    assert unlabelled["words"] == {}
    assert unlabelled["false_accepts"] == record["hits"] + record["false_accepts"]
    assert unlabelled["false_reject_rate"] is None
    # The default: the firmware's settings, the record beside the run's streams; the threshold
    # it suggests for this recording is what `kwscompress deploy --threshold` renders.
    default, path = score_recording(run_dir, folder / "testing.wav", folder / "testing.words.txt")
    assert path == folder / "recordings" / "testing.qat-8b.json"
    suggested = default["suggested"]
    assert suggested["threshold"] in [row["threshold"] for row in default["det"]]
    firmware = base / "suggested-firmware"
    argv = ["deploy", str(run_dir), "--variant", "qat-8b", "--out", str(firmware),
            "--threshold", str(suggested["threshold"]), "--window-ms", "750"]  # fmt: skip
    assert main(argv) == 0
    header = next(firmware.rglob("model_settings.h")).read_text()
    assert f"kDetectionThreshold = {suggested['threshold']};" in header
    assert "kAverageWindowMs = 750;" in header
    with pytest.raises(KwsError, match=r"variant .nope. is not in .*variants: float"):
        score_recording(run_dir, folder / "testing.wav", variant="nope")
    with pytest.raises(KwsError, match=r"cannot use the recording .*missing\.wav"):
        score_recording(run_dir, base / "missing.wav")
    short = base / "short.wav"
    soundfile.write(short, np.zeros(8000, np.int16), 16000, "PCM_16")
    with pytest.raises(KwsError, match=r"short\.wav. lasts 0\.50 s, shorter than one model window"):
        score_recording(run_dir, short)
    with pytest.raises(KwsError, match=r"ends at .* after the end of"):
        score_recording(run_dir, folder / "testing.wav", _late_labels(base, record["seconds"]))


def _late_labels(base: Path, seconds: float) -> Path:
    path = base / "late.txt"
    path.write_text(f"1.0\t1.5\tyes\n{seconds + 1:.3f}\t{seconds + 1.4:.3f}\tno\n")
    return path

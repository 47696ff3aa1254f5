"""metrics.jsonl logging and reading, the progress bar, and `t5electra plot RUN_DIR`."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from t5electra.cli import main
from t5electra.errors import DataError
from t5electra.plot import plot_run
from t5electra.train.logging import MetricsLogger, Progress, read_metrics


def _electra_run(run_dir):
    with MetricsLogger(run_dir, tensorboard=False) as log:
        for step in range(1, 21):
            log.log(step, {"loss": 10 / step, "gen_loss": 5 / step, "disc_loss": 0.5 / step, "lr": 1e-3 * step / 20,
                           "gen_acc": step / 40, "disc_precision": 0.5 + step / 50, "disc_recall": step / 25,
                           "disc_auc": 0.5 + step / 45, "tokens": 640})
            if step % 10 == 0:
                log.log(step, {"loss": 9 / step, "accuracy": 0.6 + step / 100, "f1": 0.5 + step / 100,
                               "disc_auc": 0.55 + step / 50}, split="eval")
        log.log(20, {"loss": 0.25, "lr": 1e-3})  # step 20 again (a resumed run): the last line wins
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "loss": 0.')      # torn line of a killed run


def test_logger_writes_jsonl_and_reader_keeps_the_last_line(tmp_path):
    _electra_run(tmp_path)
    recs = read_metrics(tmp_path)
    train = [r for r in recs if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 21))
    assert train[-1]["loss"] == 0.25 and "gen_acc" not in train[-1]
    evals = [r for r in recs if r["split"] == "eval"]
    assert [(r["step"], r["accuracy"]) for r in evals] == [(10, 0.7), (20, 0.8)]
    # non-main ranks write nothing
    other = tmp_path / "rank1"
    with MetricsLogger(other, enabled=False) as log:
        log.log(1, {"loss": 1.0})
    assert not other.exists()


def test_non_finite_values_stay_valid_json(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"loss": float("nan")})
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == "nan"
    with pytest.raises(DataError, match="nothing to plot yet"):
        plot_run(tmp_path)  # a NaN-only run has nothing to draw


def test_plot_command_writes_the_pngs(tmp_path, capsys):
    _electra_run(tmp_path)
    assert main(["plot", str(tmp_path), "--smooth", "3"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in printed)
    assert names == ["electra.png", "eval.png", "loss.png", "lr.png"]
    for p in printed:
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
        assert img[..., :3].std() > 0.01  # not a blank canvas
    # a T5-like run (no ELECTRA keys, no eval): only loss and lr
    t5 = tmp_path / "t5"
    with MetricsLogger(t5, tensorboard=False) as log:
        for step in range(1, 5):
            log.log(step, {"loss": 4.0 - step * 0.1, "lr": 0.01})
    assert sorted(p.name for p in plot_run(t5, tmp_path / "out")) == ["loss.png", "lr.png"]
    assert (tmp_path / "out" / "loss.png").is_file()


def test_plot_command_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("t5electra plot: error: no metrics.jsonl") and "Traceback" not in err


def test_progress_reports_tokens_per_second():
    bar = Progress(total=3, enabled=True)
    rates = [bar.update(step, loss=1.0 / step, tokens=1000) for step in (1, 2, 3)]
    bar.write("evaluated")
    bar.close()
    assert all(r > 0 for r in rates)


def test_tensorboard_events_when_installed(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, tensorboard=True) as log:
        assert log.tensorboard_enabled
        for step in (1, 2, 3):
            log.log(step, {"loss": 1.0 / step, "lr": 0.1})
        log.log(3, {"accuracy": 0.75}, split="eval")
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [(e.step, e.value) for e in acc.Scalars("eval/accuracy")] == [(3, 0.75)]


def test_one_point_curves_are_drawn_and_missing_matplotlib_is_named(tmp_path, monkeypatch, capsys):
    """A run after its first log line: a one-point line is invisible, so it gets a marker. A damaged
    step is skipped as a damaged line is. Without matplotlib the command names the extra."""
    import matplotlib.axes

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 2.0, "lr": 1e-3}) + "\n"
                                            + json.dumps({"step": "x", "split": "train", "loss": 9.0}) + "\n")
    drawn = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **kw: drawn.append(kw.get("marker")) or
                        plot(self, *a, **kw))
    names = sorted(p.name for p in plot_run(tmp_path))
    assert names == ["loss.png", "lr.png"] and drawn == ["o", "o"]
    monkeypatch.undo()

    import t5electra.core.extras as extras

    real = extras.importlib.import_module

    def no_matplotlib(name, *a):
        if name == "matplotlib":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(extras.importlib, "import_module", no_matplotlib)
    assert main(["plot", str(tmp_path)]) == 1
    assert "pip install 't5electra[data]'" in capsys.readouterr().err


def test_a_plot_interrupted_mid_write_leaves_the_previous_png(tmp_path, monkeypatch):
    """Plots are redrawn while a run trains (a viewer may hold one open): a write that fails half-way
    (disk full, a kill) leaves the previous PNG whole and no temporary file."""
    import matplotlib.figure

    run = tmp_path / "run"
    _electra_run(run)
    first = plot_run(run)
    before = {p: p.read_bytes() for p in first}
    assert matplotlib.image.imread(first[0]).ndim == 3

    def torn(fig, fname, **kw):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", torn)
    with pytest.raises(OSError, match="No space left"):
        plot_run(run)
    assert {p: p.read_bytes() for p in first} == before
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in first)

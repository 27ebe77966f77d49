"""`python -m codefusion.train.curve`: the training-curve PNG of one or more runs."""
import json


def test_training_curve_png(overfit_dir, tmp_path):
    from codefusion.train.curve import main as curve

    out = tmp_path / "curve.png"
    assert curve([str(overfit_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert curve([str(tmp_path), "--out", str(out)]) == 2  # no train_log.jsonl there


def test_training_curve_labels_terms_that_start_in_a_later_run(tmp_path):
    """A teacher logs CE only; the student after it adds the MSE terms, which the legend must still name once."""
    from codefusion.train.curve import draw

    for name, terms in (("teacher", ("ce",)), ("student", ("ce", "mse", "dec_mse"))):
        (tmp_path / name).mkdir()
        rows = [{"step": s, "loss": 1.0, **{k: 1.0 / s for k in terms}} for s in range(1, 31)]
        (tmp_path / name / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    fig = draw([tmp_path / "teacher", tmp_path / "student"])
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["ce", "mse", "dec_mse"]
    mse = next(line for line in top.lines if line.get_label() == "mse")
    assert mse.get_xdata()[-1] == 60  # the second run's steps follow the first's

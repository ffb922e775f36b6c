import json

import numpy as np
import pytest

from catalogue.catalogue import ItemCatalogue
from deploy.cli import main


@pytest.fixture()
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, 61):
        c = int(rng.integers(4))
        members = [k for k in range(1, 41) if k % 4 == c]
        items = rng.choice(members, size=int(rng.integers(5, 8)), replace=False)
        lines.append(" ".join([str(u)] + [str(i) for i in items]))
    data = tmp_path / "data"
    data.mkdir()
    (data / "sequences.txt").write_text("\n".join(lines) + "\n")
    emb = rng.standard_normal((40, 8)).astype(np.float32)
    cat = ItemCatalogue.fit([str(k) for k in range(1, 41)], emb, levels=2, codes_per_level=8, suffix_size=8,
                            iterations=5, progress=None)
    cat.save(tmp_path / "cat")
    return data, tmp_path / "cat"


SMALL = ["--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "max_epochs=2",
         "--set", "batch_size=16", "--set", "window_events=6", "--set", "eval_beam=10", "--set", "threads=1"]


def test_train_pretrain_cli(tiny_dataset, tmp_path, capsys):
    data, cat = tiny_dataset
    out = tmp_path / "run"
    assert main(["train", "pretrain", "--dataset", str(data), "--out", str(out), "--catalogue", str(cat)] + SMALL) == 0
    assert (out / "model" / "manifest.json").exists() and (out / "checkpoint" / "optimizer.safetensors").exists()
    assert "best validation" in capsys.readouterr().out


def test_train_pretrain_builds_collaborative_sids_by_default(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "shop"  # about 300 items: enough for the built catalogue's 256 codes per level
    data.mkdir()
    lines = [" ".join([str(u)] + [str(i) for i in rng.choice(300, size=5, replace=False) + 1]) for u in range(1, 301)]
    (data / "sequences.txt").write_text("\n".join(lines) + "\n")
    # every item has a title, so "auto" would have taken text: collaborative must be the default
    (data / "item_meta.jsonl").write_text("".join(json.dumps({"item_id": str(i), "title": f"product {i}"}) + "\n"
                                                  for i in range(1, 301)))
    work = tmp_path / "w"
    assert main(["train", "pretrain", "--dataset", str(data), "--out", str(tmp_path / "run"),
                 "--work-dir", str(work)] + SMALL) == 0
    built = ItemCatalogue.load(work / "catalogues" / "shop-train-only-collaborative")
    assert built.info["embedding_model"].startswith("ppmi-svd") and built.info["embedding_source"] == "collaborative"
    assert set(built.item_ids) == {str(i) for i in range(1, 301)}  # the titled ones, interactions or not
    capsys.readouterr()
    assert main(["train", "pretrain", "--dataset", str(data), "--out", str(tmp_path / "run2"), "--sids", "text",
                 "--catalogue", str(tmp_path / "cat")]) == 1
    assert "pass only one" in capsys.readouterr().err
    assert main(["bench", "quality", "--dataset", str(data), "--out", str(tmp_path / "q.json"), "--sids", "auto",
                 "--catalogue", str(tmp_path / "cat")]) == 1
    assert "pass only one" in capsys.readouterr().err


def test_a_model_on_another_catalogue_is_refused_with_what_to_pass():
    from catalogue.vocab import Vocabulary
    from trainer.bench_quality import check_model_vocab

    trained_on, built = Vocabulary(version="aaaa"), Vocabulary(version="bbbb")
    check_model_vocab(trained_on, Vocabulary(version="aaaa"), "run/model", None)
    with pytest.raises(ValueError, match=r"catalogue aaaa, not on catalogue bbbb \(built here.*--sids"):
        check_model_vocab(trained_on, built, "run/model", None)
    with pytest.raises(ValueError, match=r"not on catalogue bbbb$"):
        check_model_vocab(trained_on, built, "run/model", "cat")
    with pytest.raises(ValueError, match=r"pass the --catalogue the model was trained with\)$"):
        check_model_vocab(trained_on, built, "run/model", None, can_pass_sids=False)  # bench generate: no --sids


@pytest.mark.slow
def test_bench_quality_cli_writes_report_and_predictions(tiny_dataset, tmp_path):
    data, cat = tiny_dataset
    out, pred = tmp_path / "q.json", tmp_path / "pred.tsv"
    code = main(["bench", "quality", "--dataset", str(data), "--out", str(out), "--predictions", str(pred),
                 "--catalogue", str(cat), "--work-dir", str(tmp_path / "w"), "--time-budget", "20"] + SMALL +
                ["--sasrec-set", "max_epochs=2", "--sasrec-set", "d_model=16", "--sasrec-set", "threads=1"])
    assert code == 0
    report = json.loads(out.read_text())
    for name in ("sidstream", "sasrec"):
        for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "train_seconds"):
            assert isinstance(report[name][key], float)
    assert report["sidstream"]["invalid_generations"] == 0
    lines = pred.read_text().splitlines()
    assert len(lines) == 60
    user, items = lines[0].split("\t")
    assert 1 <= len(items.split(",")) <= 10 and user.isdigit()


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "pretrain", "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "sidstream: error:" in capsys.readouterr().err
    assert main(["train", "pretrain", "--dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "x"]) == 1


def test_bench_actions_refuses_bad_settings_before_simulating(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["bench", "actions", "--out", str(out), "--world", "userz=10"]) == 1
    assert "unknown world settings ['userz']" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--set", "d_modl=8"]) == 1
    assert "unknown training settings ['d_modl']" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--world", "events_per_user=9"]) == 1
    assert "LO-HI" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--set", "d_model=abc", "--world", "drift=0.1"]) == 1
    captured = capsys.readouterr()
    assert "training setting d_model must be int, got 'abc'" in captured.err
    assert "simulating" not in captured.out  # refused before any work
    assert not out.exists()


@pytest.mark.slow
def test_bench_generate_cli(tiny_dataset, tmp_path):
    _, cat = tiny_dataset
    out = tmp_path / "g.json"
    assert main(["bench", "generate", "--out", str(out), "--catalogue", str(cat), "--large-items", "3000",
                 "--history", "5", "--repeats", "1", "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    for case in ("catalogue", "synthetic_3000"):
        for batch in ("batch_1", "batch_32"):
            assert report[case][batch]["sidstream_ms_per_user"] > 0
            assert report[case][batch]["sasrec_ms_per_user"] > 0


@pytest.mark.slow
def test_bench_quality_can_score_a_trained_model(tiny_dataset, tmp_path):
    data, cat = tiny_dataset
    run = tmp_path / "run"
    assert main(["train", "pretrain", "--dataset", str(data), "--out", str(run), "--catalogue", str(cat)] + SMALL) == 0
    out = tmp_path / "q.json"
    assert main(["bench", "quality", "--dataset", str(data), "--out", str(out), "--catalogue", str(cat),
                 "--model", str(run / "model"), "--skip-sasrec", "--work-dir", str(tmp_path / "w")]) == 0
    report = json.loads(out.read_text())
    assert report["sidstream"]["invalid_generations"] == 0
    assert isinstance(report["sidstream"]["train_seconds"], float)  # read from the model manifest
    assert "sasrec" not in report


def test_prepare_catalogue_refuses_an_unknown_sid_source(tmp_path):
    from trainer.bench_quality import prepare_catalogue

    with pytest.raises(ValueError, match="unknown SID source 'clip'; choose one of auto, text, collaborative"):
        prepare_catalogue(tmp_path, {}, None, None, tmp_path, sid_source="clip")


@pytest.mark.slow
def test_bench_actions_cli_reports_model_ceiling_and_references(tmp_path):
    out = tmp_path / "a.json"
    world = ["users=60", "items=120", "events_per_user=8-12", "topics=3", "subtopics=2"]
    train = ["d_model=16", "n_layers=1", "n_heads=2", "max_epochs=2", "batch_size=16", "threads=1", "val_users=5"]
    args = ["bench", "actions", "--quick", "--out", str(out)]
    for setting in world:
        args += ["--world", setting]
    for setting in train:
        args += ["--set", setting]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["configuration"]["world"]["users"] == 60
    assert report["configuration"]["world"]["events_per_user"] == [8, 12]
    assert 12 * 8 <= report["events_scored"] <= 12 * 12  # every event of the 12 held-out users (20%)
    for action in ("click", "downvote", "like"):
        row = report[action]
        for key in ("auc", "ceiling_auc", "history_reference_auc", "item_prior_auc"):
            assert 0.0 <= row[key] <= 1.0, (action, key, row[key])
        assert row["ceiling_auc"] > 0.5  # the ground truth ranks its own samples better than chance
        assert row["ratio_to_ceiling"] == pytest.approx(row["auc"] / row["ceiling_auc"], abs=1e-3)


def test_bench_actions_on_graded_feedback_writes_the_named_keys(tmp_path):
    from tests.movielens_fixture import write_movielens

    data = write_movielens(tmp_path / "ml", users=60, items=25, per_user=20)
    out = tmp_path / "graded.json"
    train = ["d_model=16", "n_layers=1", "n_heads=2", "max_epochs=4", "eval_every=2", "batch_size=16",
             "window_events=10", "threads=1"]
    args = ["bench", "actions", "--dataset", str(data), "--out", str(out), "--time-budget", "30",
            "--work-dir", str(tmp_path / "w")]
    for setting in train:
        args += ["--set", setting]
    assert main(args) == 0
    report = json.loads(out.read_text())
    for target in ("like_or_better", "dislike"):
        for model in ("sidstream", "pointwise", "item_prior"):
            figures = report["actions"][target][model]
            assert 0.0 <= figures["auc"] <= 1.0 and figures["log_loss"] > 0
        assert report["actions"][target]["pointwise"]["auc"] > 0.7  # the fixture's signal is learnable
    assert set(report["train_seconds"]) == {"sidstream", "pointwise", "item_prior"}
    ndcg = report["value_ndcg"]
    assert ndcg["users"] > 0 and all(0 < ndcg[k] <= 1 for k in ("value_function", "retrieval_likelihood", "random"))
    assert report["configuration"]["events"]["test"] == 60 * 4  # each user's last 20%


def test_bench_actions_dataset_errors(tmp_path, capsys):
    from tests.movielens_fixture import write_movielens

    out = tmp_path / "a.json"
    (tmp_path / "amazon").mkdir()
    (tmp_path / "amazon" / "sequences.txt").write_text("1 2 3 4\n")
    assert main(["bench", "actions", "--out", str(out), "--dataset", str(tmp_path / "amazon")]) == 1
    assert "not a MovieLens-100K folder" in capsys.readouterr().err
    data = write_movielens(tmp_path / "ml", users=5, items=10, per_user=6)
    assert main(["bench", "actions", "--out", str(out), "--dataset", str(data), "--world", "users=9"]) == 1
    assert "pass only one" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--dataset", str(data), "--pointwise-set", "leaves=3"]) == 1
    assert "unknown pointwise settings ['leaves']" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--dataset", str(data), "--ratings", "5=Love!"]) == 1
    assert "RATING=action_name" in capsys.readouterr().err
    assert main(["bench", "actions", "--out", str(out), "--time-budget", "5"]) == 1
    assert "need --dataset" in capsys.readouterr().err
    assert not out.exists()

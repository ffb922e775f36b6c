"""`sidstream produce` refuses what it cannot replay before it connects to any broker; `sidstream backfill`
refuses a cut that does not fit the data, and writes a past to a real Feast store."""
import json

from catalogue.catalogue import build_catalogue
from catalogue.datasets import load_movielens
from deploy.cli import main
from tests.movielens_fixture import write_movielens


def test_produce_refuses_bad_dataset_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: never reached
    (tmp_path / "amazon").mkdir()
    (tmp_path / "amazon" / "sequences.txt").write_text("1 2 3\n")
    assert main(["produce", "--dataset", str(tmp_path / "amazon"), "--speedup", "10"]) == 1
    assert "--speedup paces a replay by its timestamps" in capsys.readouterr().err
    assert main(["produce", "--dataset", str(tmp_path / "empty")]) == 1
    assert "neither sequences.txt" in capsys.readouterr().err
    data = write_movielens(tmp_path / "ml", users=3, items=8, per_user=4)
    assert main(["produce", "--dataset", str(data), "--ratings", "1=Bad!"]) == 1
    assert "RATING=action_name" in capsys.readouterr().err
    assert main(["produce", "--dataset", str(data), "--speedup", "-1"]) == 1
    assert "speedup must be > 0" in capsys.readouterr().err


def test_backfill_refuses_a_cut_that_does_not_fit_the_data(tmp_path, capsys):
    (tmp_path / "amazon").mkdir()
    (tmp_path / "amazon" / "sequences.txt").write_text("1 2 3\n")
    data = write_movielens(tmp_path / "ml", users=3, items=8, per_user=4)
    assert main(["backfill", "--dataset", str(data), "--catalogue", str(tmp_path / "none")]) == 1
    assert "no catalogue at" in capsys.readouterr().err
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "manifest.json").write_text("{}")
    assert main(["backfill", "--dataset", str(data), "--share", "0.5", "--catalogue", str(tmp_path / "cat")]) == 1
    assert "MovieLens has times (use --until)" in capsys.readouterr().err
    assert main(["backfill", "--dataset", str(tmp_path / "amazon"), "--until", "5",
                 "--catalogue", str(tmp_path / "cat")]) == 1
    assert "only MovieLens has times" in capsys.readouterr().err
    assert main(["produce", "--dataset", str(tmp_path / "amazon"), "--share", "2"]) == 1
    assert "--share must be within [0, 1]" in capsys.readouterr().err
    assert main(["produce", "--items", str(tmp_path / "x.jsonl"), "--until", "5"]) == 1
    assert "need --dataset" in capsys.readouterr().err


def test_backfill_writes_a_movielens_past_to_feast_and_reads_it_back(tmp_path, capsys, monkeypatch):
    """The real command on a small MovieLens folder, a real catalogue and Feast's SQLite store."""
    data = write_movielens(tmp_path / "ml", users=12, items=20, per_user=10)
    ml = load_movielens(data)
    build_catalogue(ml.items, {u: [r.item for r in rs] for u, rs in ml.ratings.items()}, tmp_path / "cat",
                    levels=2, codes_per_level=4, suffix_size=8, iterations=5, progress=False, log=lambda *_: None,
                    embedding_source="collaborative", actions=ml.actions)
    monkeypatch.setenv("SIDSTREAM_FEAST_REPO_PATH", str(tmp_path / "feast"))
    # importing Feast sets this for the whole process (prometheus-client's multiprocess mode); set here, it is
    # removed again after the test, so later tests in this process see the normal mode
    (tmp_path / "prometheus").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    monkeypatch.setenv("SIDSTREAM_ONLINE_STORE", "sqlite")
    times = sorted(r.timestamp for rs in ml.ratings.values() for r in rs)
    cut = times[len(times) // 2]
    assert main(["backfill", "--dataset", str(data), "--until", str(cut), "--catalogue", str(tmp_path / "cat")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    past = [r for rs in ml.ratings.values() for r in rs if r.timestamp <= cut]
    assert result["events"] == len(past) and result["users"] == len({r.user for r in past})
    assert result["mismatches"] == 0 and result["materialized_users"] == result["users"]
    assert (tmp_path / "feast" / "data" / "user_sequence.parquet").is_file()

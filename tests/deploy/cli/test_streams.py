"""`sidstream produce` refuses what it cannot replay before it connects to any broker."""
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

import json

import numpy as np
import pytest

from deploy.cli import main


@pytest.fixture()
def sequences_only_dataset(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for u in range(300):
        group = u % 4
        items = rng.choice(np.arange(group * 30, group * 30 + 30) + 1, size=6, replace=False)
        lines.append(" ".join(map(str, [u + 1, *items])))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "sequences.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "ds"


def test_build_report_from_sequences_only(tmp_path, sequences_only_dataset, capsys):
    out = tmp_path / "cat"
    rc = main(["catalogue", "build", "--dataset", str(sequences_only_dataset), "--out", str(out),
               "--levels", "2", "--codes", "8", "--suffix-size", "16", "--iterations", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "unique SIDs: True" in printed
    for name in ("manifest.json", "vocab.json", "codebooks.safetensors", "sids.tsv", "quality.json"):
        assert (out / name).is_file()
    assert main(["catalogue", "report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 120 and report["embedding_sources"] == {"svd": 120}
    # a catalogue of collaborative vectors cannot tokenize new items from text: a clear error, exit 1
    items = tmp_path / "new.jsonl"
    items.write_text('{"item_id": "999", "title": "new thing"}\n')
    assert main(["catalogue", "assign", "--catalogue", str(out), "--items", str(items)]) == 1
    assert "not text embeddings" in capsys.readouterr().err


def test_build_collaborative_sids_for_items_with_text(tmp_path, sequences_only_dataset, capsys):
    titles = "".join(json.dumps({"item_id": str(i), "title": f"product {i}"}) + "\n" for i in range(1, 121))
    (sequences_only_dataset / "item_meta.jsonl").write_text(titles)
    out = tmp_path / "cat"
    assert main(["catalogue", "build", "--dataset", str(sequences_only_dataset), "--out", str(out), "--levels", "2",
                 "--codes", "8", "--suffix-size", "16", "--iterations", "5", "--embeddings", "collaborative",
                 "--collab-dim", "16"]) == 0
    report = json.loads((out / "quality.json").read_text())
    assert report["embedding_sources"] == {"svd": 120} and report["embedding_source"] == "collaborative"
    assert report["embedding_model"] == "ppmi-svd-16"
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: "expected a positive integer"
        main(["catalogue", "build", "--dataset", str(sequences_only_dataset), "--out", str(tmp_path / "x"),
              "--collab-dim", "0"])
    assert "positive integer" in capsys.readouterr().err
    # text SIDs for a dataset without titles: refused with the reason
    (sequences_only_dataset / "item_meta.jsonl").unlink()
    assert main(["catalogue", "build", "--dataset", str(sequences_only_dataset), "--out", str(tmp_path / "x"),
                 "--embeddings", "text"]) == 1
    assert "no item has a title" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert main(["catalogue", "build", "--out", str(tmp_path / "x")]) == 1
    assert "--items" in capsys.readouterr().err
    assert main(["catalogue", "report", str(tmp_path)]) == 1
    assert "not a catalogue folder" in capsys.readouterr().err
    assert main(["catalogue", "build", "--items", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["bench", "catalogue", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "b.json")]) == 1


@pytest.mark.slow
def test_assign_new_items_with_text(tmp_path, capsys):
    words = ["red lipstick", "hair shampoo", "nail polish", "face cream", "eye liner", "hair spray", "body lotion",
             "rose perfume"]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": str(i), "title": f"{words[i % 8]} number {i}",
                                         "categories": ["Beauty", words[i % 8]]}) + "\n" for i in range(200)))
    out = tmp_path / "cat"
    assert main(["catalogue", "build", "--items", str(items), "--out", str(out), "--levels", "2", "--codes", "8",
                 "--suffix-size", "16", "--iterations", "5"]) == 0
    new = tmp_path / "new.jsonl"
    new.write_text('{"item_id": "new1", "title": "dark red lipstick"}\n{"item_id": "3", "title": "face cream number 3",'
                   ' "categories": ["Beauty", "face cream"]}\n')
    capsys.readouterr()
    assert main(["catalogue", "assign", "--catalogue", str(out), "--items", str(new), "--save"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("new1\t") and lines[0].endswith("new")
    from catalogue.catalogue import ItemCatalogue

    cat = ItemCatalogue.load(out)
    assert "new1" in cat and len(cat) == 201
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"item_id": "e1", "title": ""}\n')
    assert main(["catalogue", "assign", "--catalogue", str(out), "--items", str(empty)]) == 1
    assert "no usable text" in capsys.readouterr().err


def test_a_movielens_catalogue_declares_the_rating_actions(tmp_path, capsys):
    from catalogue.catalogue import ItemCatalogue
    from tests.movielens_fixture import write_movielens

    data = write_movielens(tmp_path / "ml", users=30, items=40, per_user=15)
    out = tmp_path / "cat"
    assert main(["catalogue", "build", "--dataset", str(data), "--out", str(out), "--levels", "2", "--codes", "4",
                 "--suffix-size", "16", "--iterations", "5", "--embeddings", "collaborative",
                 "--collab-dim", "8"]) == 0
    catalogue = ItemCatalogue.load(out)
    assert catalogue.vocab.actions == ("dislike", "neutral", "like", "love")
    assert len(catalogue) == 40

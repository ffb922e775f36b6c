"""`sidstream serve` / `sidstream bench serving` argument handling (no Ray started)."""
from deploy.bench.serving import cmd_bench_serving
from deploy.cli import build_parser, load_handler, main


def test_commands_are_registered():
    parser = build_parser()
    args = parser.parse_args(["serve", "--replicas", "2", "--cpus-per-replica", "0.5", "--port", "8123", "--no-follow"])
    assert args.replicas == 2 and args.cpus_per_replica == 0.5 and args.port == 8123 and args.no_follow
    args = parser.parse_args(["bench", "serving", "--quick", "--out", "x.json"])
    assert args.quick and str(args.out) == "x.json" and load_handler(args.handler) is cmd_bench_serving


def test_serve_without_a_catalogue_is_a_one_line_error(tmp_path, capsys):
    code = main(["serve", "--catalogue", str(tmp_path / "none"), "--model", str(tmp_path / "m")])
    assert code == 1
    assert "no catalogue at" in capsys.readouterr().err


def test_serve_without_a_model_and_without_following_is_an_error(tmp_path, capsys):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "manifest.json").write_text("{}")
    code = main(["serve", "--catalogue", str(tmp_path / "cat"), "--model", str(tmp_path / "m"), "--no-follow"])
    assert code == 1
    assert "nothing to serve" in capsys.readouterr().err

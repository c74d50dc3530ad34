"""tracking.py is the one MLflow module: nothing else imports mlflow or reaches a client; where metrics land."""

from __future__ import annotations

import ast
import json
import time

import pytest
import yaml

from hsixai import tracking
from hsixai.config import params_from_dict
from hsixai.errors import HsixaiError
from hsixai.paths import Paths

from ..conftest import REPO
from ..helpers import write_params

PACKAGE = REPO / "src" / "hsixai"
TRACKING = PACKAGE / "tracking.py"
# The one place outside tracking.py allowed to name MLflow: the sweep starts the `mlflow server` process.
SERVER_START = ("sweep.py", "mlflow_server")


def mlflow_uses(source: str, filename: str) -> list[str]:
    """'file:line what' for every mlflow import, MLflow client access or 'mlflow' command outside SERVER_START."""
    found = []
    tree = ast.parse(source, filename)
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (filename, node.name) == SERVER_START:
            allowed.update(range(node.lineno, node.end_lineno + 1))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "mlflow"]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if (node.module or "").split(".")[0] == "mlflow" and not node.level else []
        elif isinstance(node, ast.Attribute) and node.attr in ("client", "experiment_id"):
            names = [f".{node.attr}"]  # a tracking client, or tracking's own experiment lookup, used directly
        elif (
            isinstance(node, ast.Call)
            and _called(node) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).split(".")[0] == "mlflow"
        ):
            names = [repr(node.args[0].value)]
        elif isinstance(node, ast.Constant) and node.value == "mlflow" and node.lineno not in allowed:
            names = ["'mlflow'"]  # the mlflow command (or an import by name)
        else:
            continue
        found += [f"{filename}:{node.lineno} {name}" for name in names]
    return found


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def test_no_mlflow_outside_tracking():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != TRACKING:
            found += mlflow_uses(path.read_text(), str(path.relative_to(PACKAGE)))
    assert not found, "MLflow used outside src/hsixai/tracking.py (go through tracking's functions):\n" + "\n".join(
        found
    )


def test_the_scan_finds_what_it_forbids():
    source = (
        "import mlflow\nfrom mlflow.entities import Metric\nimport importlib\n"
        "def log(run):\n    run.client.log_batch(run.run_id)\n    importlib.import_module('mlflow.tracking')\n"
        "def mlflow_server():\n    return ['mlflow', 'server']\n"
    )
    assert sorted(f.split(" ", 1)[1] for f in mlflow_uses(source, "stage.py")) == [
        "'mlflow'",
        "'mlflow.tracking'",
        ".client",
        "mlflow",
        "mlflow.entities",
    ]
    # the sweep's server start may name the command, and nothing else may
    assert sorted(f.split(" ", 1)[1] for f in mlflow_uses(source, "sweep.py")) == [
        "'mlflow.tracking'",
        ".client",
        "mlflow",
        "mlflow.entities",
    ]


def test_metrics_land_where_asked_and_curves_by_step(tmp_path, mlflow_uri):
    """One real MLflow database for every case: its first use costs seconds (schema migrations)."""
    params, paths = params_from_dict({}), Paths.at(tmp_path)
    curve = [float(v) for v in range(1, 1203)]  # more than one batch of 1000 points
    with tracking.stage_run("stage", params, paths) as run:
        for to in ("run", "parent", "both"):
            run.log_metrics({f"x_{to}": 1.5}, to=to)
        with pytest.raises(ValueError, match="'run', 'parent' or 'both'"):
            run.log_metrics({"x_nowhere": 1.0}, to="nowhere")  # a target that would log nothing
        run.log_curves({"pair.arm.seed0.loss_d": curve, "pair.arm.seed0.loss_t": [0.5, 0.25]})
    client = tracking.client(paths)
    (child,) = client.search_runs(
        [tracking.ensure_experiment(paths, params.tracking.experiment)], "tags.`hsixai.stage` = 'stage'"
    )
    parent = client.get_run(child.data.tags[tracking.PARENT_RUN_ID])
    assert {k for k in child.data.metrics if k.startswith("x_")} == {"x_run", "x_both"}
    assert {k for k in parent.data.metrics if k.startswith("x_")} == {"x_parent", "x_both"}
    history = client.get_metric_history(child.info.run_id, "pair.arm.seed0.loss_d")
    assert sorted((m.step, m.value) for m in history) == list(enumerate(curve, start=1))
    assert [
        m.value
        for m in sorted(client.get_metric_history(child.info.run_id, "pair.arm.seed0.loss_t"), key=lambda m: m.step)
    ] == [0.5, 0.25]

    # A parent left RUNNING (its point's stages killed before it was finished) is reused and finished by the next run.
    client.update_run(parent.info.run_id, status="RUNNING")
    with tracking.stage_run("stage2", params, paths):
        pass
    (second,) = client.search_runs(
        [tracking.ensure_experiment(paths, params.tracking.experiment)], "tags.`hsixai.stage` = 'stage2'"
    )
    assert second.data.tags[tracking.PARENT_RUN_ID] == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_headline_metrics_name_each_stage_file_once(tmp_path):
    evaluate = {
        "f1_macro": 0.8,
        "oa": 0.9,
        "kappa": 0.7,
        "f1_macro_leakfree": None,
        "oa_leakfree": 0.85,
        "kappa_leakfree": 0.6,
        "aa": 0.5,
    }
    assert tracking.headline_metrics("evaluate", evaluate) == {
        "f1_macro_test": 0.8,
        "oa_test": 0.9,
        "kappa_test": 0.7,
        "oa_test_leakfree": 0.85,
        "kappa_test_leakfree": 0.6,
    }
    assert tracking.headline_metrics("train", {"f1_macro_val": 0.75, "f1_macro_val_std": 0.1}) == {"f1_macro_val": 0.75}
    # select reads the F1s it judges by from the same files and keys
    from hsixai import select

    for name in ("f1_macro_val", select.TEST_F1, select.TEST_F1_ALL):
        assert select.SCALARS[name] == tracking.HEADLINE_METRICS[name]


def test_the_sweep_server_start_names_mlflow_only_to_start_it():
    """The allowed exception is where the test says: the sweep module's mlflow_server function."""
    tree = ast.parse((PACKAGE / SERVER_START[0]).read_text())
    assert SERVER_START[1] in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_a_cancelled_experiments_runs_are_marked_killed_and_no_other(tmp_path, mlflow_uri, monkeypatch):
    params, paths = params_from_dict({}), Paths.at(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "cancelled-exp")
    with tracking.stage_run("train", params, paths):
        pass  # finished before the cancel: stays FINISHED
    killed_mid_stage = tracking.stage_run("evaluate", params, paths)
    killed_mid_stage.__enter__()  # its process killed mid-stage: left RUNNING (kept referenced, never exited)
    monkeypatch.setenv("DVC_EXP_NAME", "finished-exp")
    with tracking.stage_run("train", params, paths):
        pass

    assert tracking.mark_killed(paths, params.tracking.experiment, ["cancelled-exp", "never-started"]) == 2
    client = tracking.client(paths)
    exp_id = tracking.ensure_experiment(paths, params.tracking.experiment)
    status = {
        (r.data.tags["hsixai.experiment"], r.data.tags.get("hsixai.stage", "parent")): r.info.status
        for r in client.search_runs([exp_id])
    }
    assert status == {
        ("cancelled-exp", "parent"): "KILLED",
        ("cancelled-exp", "train"): "FINISHED",
        ("cancelled-exp", "evaluate"): "KILLED",
        ("finished-exp", "parent"): "FINISHED",
        ("finished-exp", "train"): "FINISHED",
    }
    assert tracking.mark_killed(paths, "no-such-experiment", ["cancelled-exp"]) == 0


def test_a_registered_bundle_comes_back_by_alias_and_an_unknown_alias_is_one_error(tmp_path, mlflow_uri):
    paths = Paths.at(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text('{"patch_size": 5}')
    (bundle / "instance_0.pt").write_bytes(bytes(range(256)))
    name = tracking.registered_model_name("cnn2d")
    tags = {"hsixai.experiment": "cnn2d-p5-123", "hsixai.commit": "a" * 40}
    first = tracking.register_model(paths, "hsixai", name, bundle, tags, {"patch_size": 5}, {"f1_macro_test": 0.8})
    (bundle / "bundle.json").write_text('{"patch_size": 7}')
    tags = {**tags, "hsixai.experiment": "cnn2d-p7-456"}
    second = tracking.register_model(paths, "hsixai", name, bundle, tags, {"patch_size": 7}, {"f1_macro_test": 0.7})
    assert (first, second) == ("1", "2")
    # the same point selected again (a re-run sweep) is the same version, and the alias stays on it
    again = tracking.register_model(paths, "hsixai", name, bundle, tags, {"patch_size": 7}, {"f1_macro_test": 0.7})
    assert again == "2" and len(tracking.client(paths).search_model_versions(f"name = '{name}'")) == 2

    champion = tracking.download_model(paths, f"models:/{name}@{tracking.CHAMPION}", tmp_path / "got")
    assert (champion / "bundle.json").read_text() == '{"patch_size": 7}'  # the alias moved to the newest version
    assert (champion / "instance_0.pt").read_bytes() == bytes(range(256))
    older = tracking.download_model(paths, f"models:/{name}/1", tmp_path / "got1")
    assert (older / "bundle.json").read_text() == '{"patch_size": 5}'
    version = tracking.client(paths).get_model_version_by_alias(name, tracking.CHAMPION)
    assert version.tags == tags
    run = tracking.client(paths).get_run(version.run_id)
    assert run.data.metrics["f1_macro_test"] == 0.7 and run.data.params["patch_size"] == "7"

    with pytest.raises(HsixaiError, match=r"^--model models:/hsixai-cnn2d@nobody: no such registered model version"):
        tracking.download_model(paths, f"models:/{name}@nobody", tmp_path / "none")
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_the_experiment_opens_as_model_training_old_and_new(tmp_path, mlflow_uri):
    """A new experiment gets MLflow's experiment kind tag; one made before the project set it gets it when used."""
    paths = Paths.at(tmp_path)
    client = tracking.client(paths)
    new = client.get_experiment(tracking.ensure_experiment(paths, "fresh"))
    assert new.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    old_id = client.create_experiment("from-an-older-run")  # as hsixai made it before: no kind
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(old_id).tags
    assert tracking.ensure_experiment(paths, "from-an-older-run") == old_id
    assert client.get_experiment(old_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    chosen_id = client.create_experiment("chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    tracking.ensure_experiment(paths, "chosen")  # a kind someone set is theirs
    assert client.get_experiment(chosen_id).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"

    write_params(tmp_path, {"tracking": {"experiment": "from-an-older-run"}})
    assert tracking.runs_page_url("http://127.0.0.1:5000/", tmp_path) == (
        f"http://127.0.0.1:5000/#/experiments/{old_id}/runs?workflowType=machine_learning"
    )


def test_a_parent_run_spans_its_stages_wall_time(tmp_path, mlflow_uri):
    """Each stage is a process of its own; the parent starts with the first and ends with the last, failed or not."""
    params, paths = params_from_dict({"tracking": {"experiment": "span"}}), Paths.at(tmp_path)
    with tracking.stage_run("first", params, paths):
        time.sleep(0.3)
    with pytest.raises(RuntimeError), tracking.stage_run("second", params, paths):
        time.sleep(0.3)
        raise RuntimeError("a failing stage")
    client = tracking.client(paths)
    children = client.search_runs([tracking.ensure_experiment(paths, "span")], "tags.`hsixai.role` = 'stage'")
    assert {c.info.run_name: c.info.status for c in children} == {"first": "FINISHED", "second": "FAILED"}
    (parent_id,) = {c.data.tags[tracking.PARENT_RUN_ID] for c in children}
    parent = client.get_run(parent_id).info
    first, second = sorted(children, key=lambda c: c.info.start_time)
    assert first.info.end_time <= second.info.start_time  # one after the other, as DVC runs them
    assert parent.start_time <= first.info.start_time
    assert parent.end_time >= second.info.end_time
    assert parent.end_time - parent.start_time >= 600  # both stages' sleeps, not the moment the parent was made
    assert parent.status == "FINISHED"


def _lock(root, outs: dict[str, str]) -> None:
    stages = {
        f"stage{i}": {"cmd": "true", "outs": [{"path": path, "hash": "md5", "md5": md5, "size": 7, "nfiles": 2}]}
        for i, (path, md5) in enumerate(outs.items())
    }
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def test_data_versions_are_read_from_dvc_under_dvc_and_computed_as_dvc_does_otherwise(tmp_path, monkeypatch):
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import MemoryFileSystem
    from dvc_objects.fs.local import LocalFileSystem

    paths = Paths.at(tmp_path)
    cube = tmp_path / "data" / "prepared"
    (cube / "sub").mkdir(parents=True)
    (cube / "cube.npy").write_bytes(b"\x93NUMPY cube")
    (cube / "sub" / "b.txt").write_bytes(b"x\r\ny")  # DVC 3 hashes text as bytes (no dos2unix)
    raw = tmp_path / "data" / "raw" / "scene"
    raw.mkdir(parents=True)
    (raw / "hsi.npy").write_bytes(b"raw")
    (tmp_path / "data" / "raw" / "scene.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "ab" * 16 + ".dir", "size": 3, "nfiles": 1, "path": "scene"}]})
    )
    _lock(tmp_path, {"data/prepared": "cd" * 16 + ".dir"})

    # By hand (no DVC_STAGE), dvc.lock may be stale: computed, and equal to what DVC's own hashing gives.
    monkeypatch.delenv("DVC_STAGE", raising=False)
    _, meta, obj = build(HashFileDB(MemoryFileSystem(), "memory://odb"), str(cube), LocalFileSystem(), "md5")
    computed = tracking.data_version(paths, cube)
    assert computed == tracking.DataVersion("data/prepared", obj.hash_info.value, meta.size, 2, "computed")
    assert tracking.data_version(paths, cube / "cube.npy").md5 == tracking.file_md5(cube / "cube.npy")

    # Under DVC: what dvc.lock or the .dvc file records (here on purpose not the bytes' md5: read, not hashed).
    monkeypatch.setenv("DVC_STAGE", "train")
    assert tracking.data_version(paths, cube) == tracking.DataVersion(
        "data/prepared", "cd" * 16 + ".dir", 7, 2, "dvc.lock"
    )
    assert tracking.data_version(paths, raw) == tracking.DataVersion(
        "data/raw/scene", "ab" * 16 + ".dir", 3, 1, "data/raw/scene.dvc"
    )
    # a file inside a directory output is in neither: computed
    assert tracking.data_version(paths, cube / "cube.npy").read_from == "computed"


def test_stage_runs_and_their_parent_name_the_data_they_read(tmp_path, mlflow_uri, monkeypatch):
    params, paths = params_from_dict({"tracking": {"experiment": "inputs"}}), Paths.at(tmp_path)
    for name in ("prepared", "split"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "x.npy").write_bytes(name.encode())
    _lock(tmp_path, {"data/prepared": "cd" * 16 + ".dir", "data/split": "ef" * 16 + ".dir"})
    monkeypatch.setenv("DVC_STAGE", "train")
    with tracking.stage_run("train", params, paths) as run:
        run.log_inputs([paths.prepared_dir, paths.split_dir], "training")
    with tracking.stage_run("evaluate", params, paths) as run:
        run.log_inputs([paths.prepared_dir], "evaluation")
    client = tracking.client(paths)

    def inputs(run_id: str) -> dict[str, tuple]:
        found = {}
        for item in client.get_run(run_id).inputs.dataset_inputs:
            data = item.dataset
            context = {t.key: t.value for t in item.tags}[tracking.DATA_CONTEXT_TAG]
            found[data.name] = (data.digest, data.source_type, json.loads(data.source)["path"], context)
            assert json.loads(data.profile) == {"size": 7, "nfiles": 2, "md5_from": "dvc.lock"}
        return found

    runs = client.search_runs([tracking.ensure_experiment(paths, "inputs")], "tags.`hsixai.role` = 'stage'")
    by_stage = {r.info.run_name: r for r in runs}
    assert inputs(by_stage["train"].info.run_id) == {
        "data/prepared": ("cd" * 16 + ".dir", "dvc", "data/prepared", "training"),
        "data/split": ("ef" * 16 + ".dir", "dvc", "data/split", "training"),
    }
    assert inputs(by_stage["evaluate"].info.run_id) == {
        "data/prepared": ("cd" * 16 + ".dir", "dvc", "data/prepared", "evaluation")
    }
    # the parent (one row per point in the runs table) holds each once, with the first stage's context
    assert inputs(by_stage["train"].data.tags[tracking.PARENT_RUN_ID]) == inputs(by_stage["train"].info.run_id)

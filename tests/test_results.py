"""Results store, train-or-load, teacher zoo, experiment runner, profiles and the CLI."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import pandas as pd
import pytest

from kdlib import experiments, profiles, results, teachers
from kdlib.results import Store, config_key, table, train_or_load


def summary(acc: float) -> dict:
    return {"history": [{"epoch": 1, "test_acc": acc}], "last_acc": acc, "best_acc": acc + 1,
            "best_epoch": 1, "wall_time": 1.0, "images_per_s": 10.0, "device": "cpu"}


def test_config_key_is_canonical():
    a = {"method": {"name": "kd", "T": 4.0}, "seed": 0}
    b = {"seed": 0, "method": {"T": 4.0, "name": "kd"}}
    assert config_key(a) == config_key(b) and len(config_key(a)) == 16
    assert config_key(a) != config_key({**a, "seed": 1})
    assert config_key({"scales": (1, 2)}) == config_key({"scales": [1, 2]})  # JSON round trip keeps keys


def test_train_or_load_trains_only_what_is_missing(tmp_path):
    store = Store(tmp_path)
    configs = [{"method": m, "seed": 0} for m in ("kd", "dkd")]
    calls = []

    def train(missing):
        calls.append([c["method"] for c in missing])
        return [summary(70.0) for _ in missing]

    first = train_or_load(configs, train, store)
    assert calls == [["kd", "dkd"]] and [r["config"]["method"] for r in first] == ["kd", "dkd"]
    again = train_or_load(configs + [{"method": "crd", "seed": 0}], train, store)
    assert calls[-1] == ["crd"] and again[0] == first[0]
    train_or_load(configs[:1], train, store, force=True)
    assert calls[-1] == ["kd"]
    rec = json.loads(store.path(configs[0]).read_text())
    assert rec["env"]["torch"] and rec["device"] == "cpu" and rec["key"] == config_key(configs[0])


def _writer(root, worker, n):
    store = Store(root)
    for i in range(n):
        store.put({"i": i % 5, "w": worker % 2}, summary(float(i)), "cpu")


def test_concurrent_writers_never_leave_a_torn_record(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_writer, args=(tmp_path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 10 and not list(tmp_path.glob(".*tmp"))
    for f in files:
        json.loads(f.read_text())  # every file is complete JSON


def test_table_mean_std_n():
    recs = [{"config": {"method": {"name": m}, "seed": s}, "last_acc": acc, "best_acc": acc + 1}
            for m, s, acc in [("kd", 0, 70.0), ("kd", 1, 72.0), ("dkd", 0, 71.0)]]
    t = table(recs, by=["method.name"])
    kd = t.set_index("method.name").loc["kd"]
    assert kd["last_acc_mean"] == 71.0 and kd["n"] == 2 and kd["last_acc_std"] == pytest.approx(2 ** 0.5)
    assert pd.isna(t.set_index("method.name").loc["dkd", "last_acc_std"])
    assert list(results.mean_std(t)) == ["71.00 ± 1.41", "71.00 ± –"]


def test_profiles_validate_overrides():
    assert profiles.get("smoke", seeds=[3, 4]).seeds == (3, 4)
    assert profiles.get("cpu", epochs=None).epochs == profiles.PROFILES["cpu"].epochs
    with pytest.raises(ValueError, match="unknown profile 'laptop'; valid profiles: smoke, quick, cpu, gpu, paper"):
        profiles.get("laptop")
    with pytest.raises(ValueError, match="seeds must be a non-empty list of ints, got '1'"):
        profiles.get("cpu", seeds="1")
    with pytest.raises(ValueError, match="epochs must be a positive int, got -1"):
        profiles.get("cpu", epochs=-1)
    with pytest.raises(ValueError, match="no field colour"):
        profiles.get("cpu", colour="red")


def test_teacher_zoo_trains_once_then_loads_and_detects_a_changed_checkpoint(tmp_path):
    p = profiles.get("smoke")
    t = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    assert t.checkpoint.is_file() and 0 <= t.test_acc <= 100 and not t.model.training
    again = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    assert again.sha256 == t.sha256 and again.record["key"] == t.record["key"]
    for a, b in zip(t.model.state_dict().values(), again.model.state_dict().values()):
        assert (a == b).all()
    # a checkpoint whose bytes changed no longer matches its record: the teacher is retrained
    t.checkpoint.write_bytes(t.checkpoint.read_bytes() + b"\0")
    retrained = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    assert retrained.record["finished"] >= t.record["finished"] and retrained.checkpoint.is_file()


def test_experiment_run_records_every_method_and_seed_then_loads(tmp_path):
    p = profiles.get("smoke", seeds=[0, 1])
    t = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    recs = experiments.run(p, t, "resnet8", ["vanilla", "kd"], results_dir=tmp_path, progress=False)
    assert [(r["label"], r["config"]["seed"]) for r in recs] == [("vanilla", 0), ("kd", 0), ("vanilla", 1), ("kd", 1)]
    assert recs[1]["config"]["teacher"]["sha256"] == t.sha256
    assert recs[1]["config"]["method"] == {"name": "kd", "ce_weight": 0.1, "kd_weight": 0.9, "T": 4.0}
    mtimes = {f: f.stat().st_mtime_ns for f in tmp_path.glob("*.json")}
    again = experiments.run(p, t, "resnet8", ["vanilla", "kd"], results_dir=tmp_path, progress=False)
    assert [r["key"] for r in again] == [r["key"] for r in recs]
    assert mtimes == {f: f.stat().st_mtime_ns for f in tmp_path.glob("*.json")}  # nothing retrained
    t2 = table(recs, by=["method.name"])
    assert list(t2["n"]) == [2, 2]
    # load-only (the benchmark chapter): stored runs come back, missing ones are skipped, nothing trains
    loaded = experiments.run(p, t, "resnet8", ["kd", "dkd"], results_dir=tmp_path, progress=False, train=False)
    assert [(r["label"], r["key"]) for r in loaded] == [("kd", recs[1]["key"]), ("kd", recs[3]["key"])]
    assert mtimes == {f: f.stat().st_mtime_ns for f in tmp_path.glob("*.json")}


def test_load_only_never_trains_a_teacher(tmp_path):
    with pytest.raises(LookupError, match="no stored resnet8 teacher of profile 'smoke'.*make book PROFILE=smoke"):
        teachers.get("resnet8", profiles.get("smoke"), results_dir=tmp_path, train=False)
    assert not list(tmp_path.rglob("*.json"))


def test_cost_times_one_epoch_and_measures_memory(tmp_path):
    p = profiles.get("smoke")
    t = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    ds = p.load_data()
    plain, sskd = (experiments.cost(p, t, "resnet8", {"method": m}, ds, results_dir=tmp_path) for m in ("kd", "sskd"))
    for c in (plain, sskd):
        assert c["epoch_s"] > 0 and c["cpu_s"] > 0 and c["peak_mb"] >= 0 and c["config"]["role"] == "cost"
    assert sskd["epoch_s"] > plain["epoch_s"]  # four rotated copies of every image: more work per epoch
    assert len(list(tmp_path.glob("*.json"))) == 3  # the teacher and two cost records
    again = experiments.cost(p, t, "resnet8", {"method": "kd"}, ds, results_dir=tmp_path)
    assert (again["key"], again["epoch_s"]) == (plain["key"], plain["epoch_s"])  # measured once, then loaded


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kdlib", *args], capture_output=True, text=True, timeout=120)


def test_cli_lists_and_errors(tmp_path):
    out = _cli("--help")
    assert out.returncode == 0 and "train-teacher" in out.stdout and "datasets" in out.stdout
    assert "resnet32x4" in _cli("models").stdout.split()
    assert _cli("datasets").stdout.split() == ["cifar10", "cifar100", "fashion_mnist", "synthetic"]
    bad = _cli("distill", "--teacher", "resnet8", "--student", "resnet8", "--method", "kdd", "--profile", "smoke",
               "--results-dir", str(tmp_path))
    assert bad.returncode == 2 and "unknown method 'kdd'" in bad.stderr


# ---- what a record says about itself --------------------------------------------------------

def record(method="kd", acc=75.0, ce=0.4, seed=0, ce_weight=None, k=10):
    m = {"name": method, **({} if ce_weight is None else {"ce_weight": ce_weight})}
    return {"key": f"{method}{seed}", "last_acc": acc, "num_classes": k,
            "history": [{"epoch": 1, "test_acc": acc, "terms": {"ce": ce}}],
            "config": {"method": m, "seed": seed, "teacher": {"arch": "resnet20"}, "student": {"arch": "resnet8"},
                       "data": {"name": "fashion_mnist"}, "recipe": {}, "profile": "cpu", "amp": False}}


def test_health_flags_runs_that_did_not_train():
    assert results.health(record()) == {"trained": True, "diagnosis": ""}
    chance = results.health(record(acc=11.0, ce=2.30))
    assert not chance["trained"] and "near chance: 11.0% (chance 10%)" in chance["diagnosis"]
    assert "cross-entropy stuck at 2.30" in chance["diagnosis"]
    # KD weighs its CE 0.1: a weighted 0.23 is a CE of 2.3, stuck at ln 10
    assert not results.health(record(acc=40.0, ce=0.23, ce_weight=0.1))["trained"]
    below = results.health(record(acc=60.4), vanilla=record("vanilla", acc=75.35))
    assert not below["trained"] and "14.9 points below the vanilla student of its seed (75.3%)" in below["diagnosis"]
    assert results.health(record(acc=71.0), vanilla=record("vanilla", acc=75.35))["trained"]   # 4.35 below: a result
    assert not results.health(record(acc=float("nan")))["trained"]
    assert results.health(record(acc=3.0, ce=0.5, k=100))["trained"]     # 3 % is 3x chance on 100 classes


def test_with_health_uses_the_vanilla_of_the_same_seed():
    recs = [record("vanilla", 75.0, seed=0), record("vanilla", 70.0, seed=1), record("ab", 68.0, seed=0),
            record("ab", 68.0, seed=1)]
    marked = {(r["config"]["method"]["name"], r["config"]["seed"]): r["health"]["trained"]
              for r in results.with_health(recs)}
    assert marked == {("vanilla", 0): True, ("vanilla", 1): True, ("ab", 0): False, ("ab", 1): True}


def test_predictions_round_trip_and_recompute_the_accuracy(tmp_path):
    from kdlib.io import decode_ints, encode_ints
    import numpy as np
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 10000)
    preds = np.where(rng.random(10000) < 0.7, labels, rng.integers(0, 100, 10000))
    enc = encode_ints(preds)
    assert enc["dtype"] == "uint8" and len(json.dumps(enc)) < 15000
    assert (decode_ints(enc) == preds).all() and encode_ints(np.array([300]))["dtype"] == "uint16"
    rec = {"key": "k", "predictions": enc}
    assert 100 * (results.predictions(rec) == labels).mean() == pytest.approx(100 * (preds == labels).mean())
    with pytest.raises(KeyError, match="holds no predictions"):
        results.predictions({"key": "old"})
    with pytest.raises(ValueError, match="damaged encoded integers"):
        decode_ints({**enc, "n": 5})


def test_every_committed_record_is_found_again_by_the_current_code():
    """Rebuild each stored record's config from today's code (method defaults, recipe, data)
    and find its key: a change that would silently re-key stored records fails here."""
    from dataclasses import asdict
    from pathlib import Path
    from kdlib import methods
    root = Path(__file__).resolve().parents[1] / "results"
    paths = sorted(root.glob("*.json"))
    assert paths, "no committed records"
    for path in paths:
        rec = json.loads(path.read_text())
        c = rec["config"]
        assert path.stem == rec["key"] == config_key(c), path.name
        if c["role"] == "cost":
            c = {k: v for k, v in c.items() if k != "timed"}  # a measurement of a student run's config
        if c["role"] == "teacher":
            assert c["method"] == {"name": "vanilla"}, path.name    # teachers: plain cross-entropy
        else:
            m = c["method"]
            built = methods.create(m["name"], **{k: v for k, v in m.items() if k not in ("name", "schedule")}).config
            assert json.loads(json.dumps(built)) == m, path.name
        p = profiles.get(c["profile"], epochs=c["recipe"]["epochs"], teacher_epochs=c["recipe"]["epochs"],
                         batch_size=c["recipe"]["batch_size"], amp=c["amp"],
                         train_size=c["data"]["train_size"], test_size=c["data"]["test_size"])
        recipe = p.teacher_recipe() if c["role"] == "teacher" else p.student_recipe()
        assert json.loads(json.dumps(asdict(recipe))) == c["recipe"], path.name
        assert p.data_config() == c["data"], path.name


def test_pilot_table_measures_noise_per_cell():
    from kdlib import stats
    recs = []
    for s, (v, k) in enumerate([(80.0, 81.0), (81.0, 82.5), (79.5, 80.0), (80.5, 81.9)]):
        for m, acc in (("vanilla", v), ("kd", k)):
            recs.append({"cell": (10000, 15, 64), "last_acc": acc, "wall_time": 100.0 + s,
                         "config": {"seed": s, "method": {"name": m}}})
    row = experiments.pilot_table(recs).iloc[0]
    d = [1.0, 1.5, 0.5, 1.4]
    assert row.n == 4 and row.gap == pytest.approx(sum(d) / 4) and row.paired_sd == pytest.approx(pd.Series(d).std())
    assert row.mde_5 == pytest.approx(stats.mde(5, row.paired_sd)) and row.group_s == pytest.approx(101.5)
    assert stats.mde(int(row.seeds_for_1), row.paired_sd) <= 1.0


def test_trained_only_and_ours_vs_paper_mark_failed_runs():
    import pandas as pd
    recs = [{**record("vanilla", 75.0), "label": "vanilla"}, {**record("ab", 60.0), "label": "ab"},
            {**record("kd", 76.0), "label": "kd"}]
    for r in recs:
        r.update(best_acc=r["last_acc"], history=[{"epoch": 1, "test_acc": r["last_acc"], "terms": {"ce": 0.4}}])
    ok, note = results.trained_only(recs)
    assert [r["label"] for r in ok] == ["vanilla", "kd"] and note.startswith("*Left out (failed to train): ab, failed: 1")
    paper = pd.DataFrame({"method": ["student", "kd", "ab"], "value": [70.0, 71.0, 69.0]})
    table = results.ours_vs_paper(recs, paper).set_index("method")
    assert table.loc["ab", "our gain"].startswith("failed: 15.0 points below") and table.loc["kd", "our gain"] == "+1.00"


def test_rerun_changes_one_setting_and_keeps_the_rest(tmp_path):
    p = profiles.get("smoke")
    t = teachers.get("resnet8", p, results_dir=tmp_path, progress=False)
    first, = experiments.run(p, t, "resnet8", ["kd"], results_dir=tmp_path, progress=False)
    again, = experiments.rerun([first], results_dir=tmp_path, progress=False, epochs=2)
    c0, c1 = first["config"], again["config"]
    assert c1["recipe"]["epochs"] == 2 and len(again["history"]) == 2 and again["key"] != first["key"]
    assert (c1["teacher"], c1["method"], c1["data"], c1["seed"]) == (c0["teacher"], c0["method"], c0["data"], c0["seed"])

"""One config order (dataclass defaults < preset < typed flags), run.json as the whole config, --resume from
run.json, global options anywhere, --device auto, presets shipped for every command."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cancel_cli.cli import app, hoist_global_options
from cancel_cli.config import EXPERIMENTS, command_config, from_dict, load_preset, resolve_device
from cancel_cli.store import Store

runner = CliRunner()

# per command: a tiny preset, a flag typed equal to the dataclass default (but unlike the preset), and the
# table whose rerun from run.json must be identical.  Columns that measure time are dropped.
ROLLOUT = {"prompts": 2, "n": 4, "max_new_tokens": 24, "top_p": 0.95}
CASES = {
    "train": ({**ROLLOUT, "steps": 1, "minibatch_prompts": 1, "val_every": 5, "val_sets": [], "checkpoint_every": 0},
              ("--top-p", "1.0"), ("top_p", 1.0), "metrics"),
    "flip": ({**ROLLOUT, "steps": 1, "minibatch_prompts": 1}, ("--top-p", "1.0"), ("top_p", 1.0), "steps"),
    "positive-only": ({**ROLLOUT, "train_steps": 1}, ("--top-p", "1.0"), ("top_p", 1.0), "variants"),
    "coupling": ({**ROLLOUT, "pairs": 500, "exact_tokens": 4}, ("--top-p", "1.0"), ("top_p", 1.0), "pair_stats"),
    "mask-effect": ({"prompts": 4, "n": 4, "top_p": 0.95, "candidates": 6, "full_candidates": 1, "mask_size": 2,
                     "mask_sign": "any"},
                    ("--top-p", "1.0"), ("top_p", 1.0), "table1"),
    "mc-value": ({"prompts": 8, "n": 4, "top_p": 0.95, "M": 2, "per_cell": 1}, ("--top-p", "1.0"), ("top_p", 1.0),
                 "values_final"),  # full-length responses: every (class x sign) cell needs a token
    "budget-sweep": ({"top_p": 0.95, "M": 2, "candidates": 2, "cand_prompts": 2, "prompts": 6, "n": 4,
                      "base_prompts": 6, "axis": "rollout-n", "values": "2"}, ("--top-p", "1.0"), ("top_p", 1.0), "sweep"),
    "entropy-gap": ({"bootstrap": 20}, ("--bootstrap", "2000"), ("bootstrap", 2000), "curve"),
    "eval": ({"benchmarks": "toy-2digit", "limit": 3, "k": 1, "max_new_tokens": 24, "temperature": 1.0},
             ("--temperature", "0.6"), ("temperature", 0.6), "results"),
}
TIME_COLUMNS = ("seconds",)


def cli(results, *args, ok=True):
    res = runner.invoke(app, ["--results", str(results), "--quiet", "--json", *args])
    if ok:
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout.strip().splitlines()[-1])
    return res


def table(results, run_id, name):
    df = Store(results).get(run_id).read_table(name)
    return df.drop(columns=[c for c in TIME_COLUMNS if c in df.columns])


@pytest.mark.parametrize("command", list(CASES))
def test_typed_flag_beats_preset_and_run_json_alone_reruns(command, tmp_path):
    preset, flag, (field, want), name = CASES[command]
    assert getattr(command_config(command)(), field) == want  # the typed value IS the dataclass default
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset))
    store_a, store_b = tmp_path / "a", tmp_path / "b"
    if command == "entropy-gap":  # reads an mc-value run of the same store
        mc = tmp_path / "mc.yaml"
        mc.write_text(yaml.safe_dump(CASES["mc-value"][0]))
        cli(store_a, "mc-value", "--preset", str(mc))
        store_b = store_a
    out = cli(store_a, command, "--preset", str(path), *flag)
    run = Store(store_a).get(out["id"])
    saved = run.config
    assert saved[field] == want  # typed flag won over the preset although it equals the default
    for k, v in preset.items():  # the rest of the preset applied
        if k != field:
            assert saved[k] == v, (k, saved[k], v)
    assert saved.get("device", "cpu") == "cpu"  # resolved, not "auto"
    from_dict(command_config(command), saved)  # run.json holds a complete config of the command
    again = cli(store_b, command, "--preset", str(run.path / "run.json"))  # nothing else typed
    assert Store(store_b).get(again["id"]).config == saved
    pd.testing.assert_frame_equal(table(store_a, out["id"], name), table(store_b, again["id"], name))


@pytest.fixture()
def tiny_train(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text(yaml.safe_dump({**ROLLOUT, "minibatch_prompts": 1, "val_every": 3, "val_prompts": 4,
                                 "val_sets": ["toy-2digit"], "checkpoint_every": 2}))
    return str(p)


def test_resume_finishes_with_the_saved_config_and_equals_an_uninterrupted_run(tmp_path, tiny_train, monkeypatch):
    from cancel_cli.grpo import trainer

    whole = cli(tmp_path / "whole", "train", "--preset", tiny_train, "--steps", "6")
    real = trainer.Trainer.train_step

    def killed_after_step_2(self):
        if self.step == 3:
            raise KeyboardInterrupt("killed")
        return real(self)

    monkeypatch.setattr(trainer.Trainer, "train_step", killed_after_step_2)
    res = cli(tmp_path / "cut", "train", "--preset", tiny_train, "--steps", "6", ok=False)
    assert res.exit_code == 130
    (run,) = Store(tmp_path / "cut").runs("train")
    assert run.status == "failed" and run.config["steps"] == 6
    monkeypatch.setattr(trainer.Trainer, "train_step", real)

    refused = cli(tmp_path / "cut", "train", "--resume", run.id, "--prompts", "3", ok=False)
    assert refused.exit_code == 2 and "--prompts 3 differs" in refused.output and "Traceback" not in refused.output
    assert Store(tmp_path / "cut").get(run.id).status == "failed"  # nothing ran
    out = cli(tmp_path / "cut", "train", "--resume", run.id)  # no other flag: the saved config
    assert out["id"] == run.id and out["status"] == "done"
    for name in ("metrics", "validation"):
        pd.testing.assert_frame_equal(table(tmp_path / "whole", whole["id"], name), table(tmp_path / "cut", run.id, name))
    assert table(tmp_path / "cut", run.id, "metrics").step.tolist() == [1, 2, 3, 4, 5, 6]


def test_a_part_written_under_another_config_is_never_mixed_in(tmp_path):
    from cancel_cli.errors import UserError

    st = Store(tmp_path)
    run = st.new_run("mc-value", {"M": 4})
    run.write_part("values", 0, pd.DataFrame({"v": [1.0]}))
    other = st.new_run("mc-value", {"M": 8})
    other.write_part("values", 1, pd.DataFrame({"v": [2.0]}))
    (other.path / "values.parts" / "part-000001.parquet").rename(run.path / "values.parts" / "part-000001.parquet")
    run.release(), other.release()  # as after the processes that wrote them ended (no live owner)
    with pytest.raises(UserError, match="refusing to mix two configs"):
        run.read_table("values")
    with pytest.raises(UserError, match="another config"):
        with st.running("mc-value", {"M": 8}, resume=run.id):
            pass


def test_unreadable_run_json_is_refused_and_never_overwritten(tmp_path):
    st = Store(tmp_path)
    run = st.new_run("train", {"steps": 3})
    (run.path / "run.json").write_text("{not json")
    res = runner.invoke(app, ["--results", str(tmp_path), "train", "--resume", run.id])
    assert res.exit_code == 2 and "run.json is unreadable" in res.output and "Traceback" not in res.output
    assert (run.path / "run.json").read_text() == "{not json"
    ls = runner.invoke(app, ["--results", str(tmp_path), "--json", "results", "ls"])
    assert json.loads(ls.output)[0]["status"] == "damaged"
    assert st.latest("train") is None


def test_global_options_work_after_the_subcommand(tmp_path):
    assert hoist_global_options(["train", "--steps", "2", "--seed", "3", "--json", "--device=cpu", "--", "--quiet"]) == \
        ["--seed", "3", "--json", "--device=cpu", "train", "--steps", "2", "--", "--quiet"]
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"benchmarks": "toy-2digit", "limit": 2, "k": 1, "max_new_tokens": 8}))
    res = runner.invoke(app, ["eval", "--preset", str(p), "--device", "cpu", "--seed", "7", "--results", str(tmp_path),
                              "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    run = Store(tmp_path).get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    assert run.config["seed"] == 7 and run.config["device"] == "cpu"


def test_device_auto_picks_cuda_when_available(monkeypatch):
    import torch

    assert resolve_device("auto") == (("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == ("cuda", "bfloat16")
    assert resolve_device("cpu") == ("cpu", "float32")
    assert resolve_device("cuda:1", "float16") == ("cuda:1", "float16")


def test_every_preset_is_a_config_of_its_command():
    names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    for command in ("flip", "positive-only", "coupling", "mask-effect", "mc-value", "entropy-gap", "budget-sweep",
                    "eval", "train", "reproduce"):
        assert f"{command}_toy" in names and f"{command}_paper" in names, command
    for name in names:
        command = name.rsplit("_", 1)[0]
        from_dict(command_config(command), load_preset(name), name)  # unknown keys raise


def test_preset_of_another_command_is_refused(tmp_path):
    run = Store(tmp_path).new_run("coupling", {"prompts": 2})
    res = runner.invoke(app, ["--results", str(tmp_path), "mask-effect", "--preset", str(run.path / "run.json")])
    assert res.exit_code == 2 and "is a coupling run, not mask-effect" in res.output

"""Item 4: verl's dataset and chat template on the toy keep every prompt, with the torch path's tokens."""

import pandas as pd
import pytest

pytest.importorskip("verl")

from cancel_cli.tasks.prompts import TEMPLATES, render  # noqa: E402
from cancel_cli.verl_ext.data import chat_template  # noqa: E402


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_chat_template_renders_the_torch_paths_prompt(template):
    from transformers import AutoTokenizer

    from cancel_cli.config import MODELS

    tok = AutoTokenizer.from_pretrained(MODELS["toy"])
    tok.chat_template = chat_template(template)
    for problem in ["Add 12+345.\n", "What is $\\frac{1}{2}$ of {x}? Use 'quotes' and \"these\"."]:
        msgs = [{"role": "user", "content": problem}]
        assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == render(problem, template)


def test_verl_dataset_keeps_every_toy_prompt_with_identical_tokens(tmp_path):
    """The launcher's command -> hydra config -> verl's HFModelConfig tokenizer (custom_chat_template) and
    RLHFDataset with its over-long filter, as the v1 trainer's _init_tokenizer / _init_dataloader build them."""
    import shlex

    from hydra import compose, initialize_config_dir
    from typer.testing import CliRunner
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    from cancel_cli.cli import app
    from cancel_cli.config import load_policy
    from cancel_cli.grpo.trainer import TrainConfig
    from cancel_cli.verl_ext.data import to_verl_rows, train_problems, write_run_data
    from cancel_cli.verl_ext.launcher import CONFIG_DIR

    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", "--dry-run"])
    assert res.exit_code == 0, res.output
    ov = [c for c in shlex.split(res.output.strip().splitlines()[-1])[3:] if not c.startswith("--config")]
    probs = train_problems(TrainConfig())[:64]
    to_verl_rows(probs, "train").to_parquet(tmp_path / "t.parquet")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("cancel_grpo", overrides=ov + [f"data.train_files={tmp_path / 't.parquet'}",
                                                     "data.dataloader_num_workers=0"])
    tok = omega_conf_to_dataclass(cfg.actor_rollout_ref.model).tokenizer
    ds = create_rl_dataset(cfg.data.train_files, cfg.data, tok, None, is_train=True)
    assert len(ds) == 64  # nothing dropped by the over-long filter (it was 0 without a chat template)
    pol = load_policy("toy", "cpu", "float32")
    for i in (0, 63):
        ids = tok.apply_chat_template(ds[i]["raw_prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == pol.encode(render(probs[i].problem, "toy"))  # what the torch engine feeds the model

    cfg_toy = TrainConfig(val_k=3, val_prompts=8)
    _, val = write_run_data(cfg_toy, tmp_path / "run")
    v = pd.read_parquet(val)
    assert len(v) == 8 * len(cfg_toy.val_sets) and set(v["__rollout_n__"]) == {3}  # verl's per-row n (avg@k)
    assert set(v.data_source) == set(cfg_toy.val_sets)  # validation rows keyed by benchmark, as the torch path

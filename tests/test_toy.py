import json


from cancel_cli.config import TOY_DIR
from cancel_cli.toy_model import entropy_profile, toy_accuracy


def test_toy_architecture(toy):
    cfg = toy.model.config
    assert cfg.model_type == "qwen3" and cfg.hidden_size == 128 and cfg.num_hidden_layers == 2
    assert cfg.num_attention_heads == 4 and not cfg.tie_word_embeddings
    n = sum(p.numel() for p in toy.model.parameters())
    assert 400_000 <= n <= 1_000_000
    assert toy.lm_head.weight.data_ptr() != toy.model.get_input_embeddings().weight.data_ptr()


def test_tokenizer_roundtrip(toy):
    text = "Add 347+285.\nAdd by columns: 7+5+0=12; 4+8+1=13 -> \\boxed{632}"
    ids = toy.encode(text)
    assert len(ids) == len(text)
    assert toy.decode(ids) == text
    assert toy.decode(ids + [toy.eos_id]) == text


def test_toy_accuracy_in_window(toy):
    acc = toy_accuracy(toy, n=512, seed=12345)
    assert 0.35 <= acc <= 0.65, acc


def test_toy_entropy_profile(toy):
    prof = entropy_profile(toy, n=256, seed=777)
    assert prof["share_gt_0.1_all"] >= 0.15, prof
    assert prof["share_gt_0.1_scaffold"] >= 0.10, prof


def test_card_and_build_record_exist():
    facts = json.loads((TOY_DIR / "build.json").read_text())
    assert 0.35 <= facts["accuracy_t1_512"] <= 0.6
    card = (TOY_DIR / "README.md").read_text()
    assert "cancel toy build --seed 0" in card and "Entropy profile" in card


def test_toy_build_is_deterministic_and_rebuilds_the_shipped_model(tmp_path):
    """`cancel toy build --seed 0` reproduces the shipped checkpoint (same stopping step, same weights)."""
    from typer.testing import CliRunner
    from safetensors.torch import load_file

    from cancel_cli.cli import app

    res = CliRunner().invoke(app, ["--quiet", "toy", "build", "--out", str(tmp_path / "toy")])
    assert res.exit_code == 0, res.output
    shipped = json.loads((TOY_DIR / "build.json").read_text())
    rebuilt = json.loads((tmp_path / "toy" / "build.json").read_text())
    assert rebuilt["steps"] == shipped["steps"]
    a, b = load_file(TOY_DIR / "model.safetensors"), load_file(tmp_path / "toy" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3

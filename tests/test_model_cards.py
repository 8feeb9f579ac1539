"""Every shipped model card is checked: the file's hash, the card's fields, and ONNX Runtime's
output on the stored example against the reference recorded at export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from core.errors import ModelLoadError
from onnx_models import CARD_KEYS, check_parity, model_cards, models_dir, open_model, read_card
from tests.jackutil import ROOT

CARDS = model_cards()
SHIPPED = {"harmonizer", "harmonizer_chorale", "harmonizer_midpoint", "harmonizer_tagger",
           "harmonizer_random10", "continuation", "continuation_d4", "continuation_plain",
           "continuation_music21"}


def test_every_shipped_model_is_there():
    assert {card.name.removesuffix(".card.json") for card in CARDS} == SHIPPED
    for name in SHIPPED:
        assert read_card(models_dir() / f"{name}.card.json")["onnx_file"] == f"{name}.onnx"
        assert (models_dir() / f"{name}.onnx").is_file() and (models_dir() / f"{name}.parity.npz").is_file()


@pytest.mark.parametrize("card_path", CARDS, ids=[c.name for c in CARDS])
def test_card_hash_and_parity(card_path):
    card = read_card(card_path)
    for key in (*CARD_KEYS, "data", "training"):
        assert key in card, f"{card_path.name} lacks {key}"
    assert check_parity(card_path) <= float(card["parity"].get("atol", 1e-4))


@pytest.mark.parametrize("card_path", CARDS, ids=[c.name for c in CARDS])
def test_a_changed_model_file_is_refused(card_path, tmp_path):
    for item in card_path.parent.glob(card_path.name.removesuffix(".card.json") + ".*"):
        shutil.copy(item, tmp_path / item.name)
    card = read_card(card_path)
    model = tmp_path / card["onnx_file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 .* does not match"):
        check_parity(tmp_path / card_path.name)


def test_the_loader_refuses_a_card_for_another_file_and_a_missing_key(tmp_path):
    source = models_dir() / "harmonizer_midpoint.card.json"
    for item in models_dir().glob("harmonizer_midpoint.*"):
        shutil.copy(item, tmp_path / item.name)
    renamed = tmp_path / "other.onnx"
    shutil.copy(tmp_path / "harmonizer_midpoint.onnx", renamed)
    shutil.copy(source, tmp_path / "other.card.json")
    with pytest.raises(ModelLoadError, match="describes 'harmonizer_midpoint.onnx', not 'other.onnx'"):
        open_model(renamed)
    card = read_card(source)
    del card["inputs"]
    (tmp_path / "harmonizer_midpoint.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"missing keys \['inputs'\]"):
        open_model(tmp_path / "harmonizer_midpoint.onnx")
    session, card = open_model(models_dir() / "harmonizer_midpoint.onnx")
    assert [node.name for node in session.get_inputs()] == [entry["name"] for entry in card["inputs"]]


def test_models_verify_command():
    out = subprocess.run([sys.executable, "-m", "bridge", "models", "verify"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[ok  ]") == len(CARDS)

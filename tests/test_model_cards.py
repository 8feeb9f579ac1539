"""Every shipped model card is checked: the file's hash, the card's fields, and ONNX Runtime's
output on the stored example against the reference recorded at export."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from core.errors import ModelLoadError
from onnx_models import check_parity, model_cards, read_card
from tests.jackutil import ROOT

CARDS = model_cards()


@pytest.mark.parametrize("card_path", CARDS, ids=[c.name for c in CARDS])
def test_card_hash_and_parity(card_path):
    card = read_card(card_path)
    for key in ("sha256", "inputs", "outputs", "data", "training"):
        assert key in card, f"{card_path.name} lacks {key}"
    assert check_parity(card_path) <= float(card["parity"].get("atol", 1e-4))


@pytest.mark.parametrize("card_path", CARDS, ids=[c.name for c in CARDS])
def test_a_changed_model_file_is_refused(card_path, tmp_path):
    for item in card_path.parent.glob(card_path.name.removesuffix(".card.json") + ".*"):
        shutil.copy(item, tmp_path / item.name)
    card = read_card(card_path)
    model = tmp_path / (card.get("onnx_file") or card["model_file"])
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 .* does not match"):
        check_parity(tmp_path / card_path.name)


def test_models_verify_command():
    out = subprocess.run([sys.executable, "-m", "bridge", "models", "verify"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[ok  ]") == len(CARDS)

"""MODEL.md documents every config key with the schema's own default and description."""

from pathlib import Path

from gpusim import docs
from gpusim.config import Config

MODEL = Path(__file__).resolve().parent.parent / "MODEL.md"


def test_model_md_tables_are_generated_from_the_current_schema():
    text = MODEL.read_text()
    assert docs.render(text) == text, "MODEL.md is stale: run `python -m gpusim.docs`"


def test_every_substrate_key_and_the_mg_defaults_appear_in_model_md():
    text = MODEL.read_text()
    for key in ("D_um2_per_min", "decay_per_min", "vessel_supply_per_min", "update_every_min", "substeps"):
        assert f"`substrates.<name>.{key}`" in text
    assert "| `substrates.mg.D_um2_per_min` | 20000 |" in text
    assert "| `substrates.mg.vessel_supply_per_min` | 2.5 |" in text
    for key in Config.model_fields:
        assert key in text

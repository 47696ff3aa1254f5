"""core/typed_config.py: one way to declare and document settings, used by every config class."""

import dataclasses

import pytest

from t5electra.core.typed_config import check_keys, coerce, help_of, option
from t5electra.errors import ConfigError
from t5electra.models.electra import ElectraConfig
from t5electra.models.electra_rtd import ElectraPretrainingConfig
from t5electra.models.t5 import T5Config
from t5electra.serve.config import ServeConfig
from t5electra.train.config import RunConfig


def _settings_classes():
    sections = [type(getattr(RunConfig(), f.name)) for f in dataclasses.fields(RunConfig)]
    return [T5Config, ElectraConfig, ElectraPretrainingConfig, ServeConfig, *sections]


@pytest.mark.parametrize("cls", _settings_classes(), ids=lambda c: c.__name__)
def test_every_setting_is_documented_in_one_style(cls):
    undocumented = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert undocumented == [], f"{cls.__name__}: declare these with option(default, help)"


def test_option_copies_mutable_defaults_and_keys_are_checked():
    @dataclasses.dataclass
    class S:
        ids: list[int] = option([1], "some ids")

    a, b = S(), S()
    a.ids.append(2)
    assert b.ids == [1] and help_of(S, "ids") == "some ids"
    assert coerce("3e-4", float, "lr") == 3e-4 and coerce("none", int | None, "n") is None
    with pytest.raises(ConfigError, match=r"x: unknown setting 'idz' \(did you mean 'ids'\?\)"):
        check_keys(["ids", "idz"], ["ids"], "x", "setting")

"""Trainer names ⇄ loss configurations, and how nnU-Net finds the classes."""

import os
import pickle
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nnunet_dicephi.trainers as T
from nnunet_dicephi.loss_config import (
    CROSS_ENTROPY_ONLY,
    HEURISTIC,
    LOSSES,
    PRESETS,
    REGISTRY,
    LossConfig,
    TrainerNameError,
    format_number,
    parse_trainer_name,
    trainer_name,
)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_and_respect_nnunet_name_rules(name):
    config = PRESETS[name]
    assert parse_trainer_name(name) == config
    assert parse_trainer_name(trainer_name(config)) == config
    assert "__" not in name and "." not in name and "/" not in name
    assert getattr(T, name).loss_config == config


def test_paper_defaults():
    assert PRESETS["TrainerDiceBI"] == LossConfig(loss="Dice", phi="BI", eps_nr=1e-7, eps_dr=1e-7)
    assert PRESETS["TrainerDiceIEps"].eps_nr == HEURISTIC
    assert PRESETS["TrainerGDL"].phi == "CI"
    # the background channel is left out, as nnU-Net's Dice does, except where the loss's reference
    # counts it (Berman's Lovász-Softmax)
    assert {name for name, c in PRESETS.items() if c.include_background} == {
        "TrainerLovasz",
        "TrainerLovasz_CE",
        "TrainerCE",  # a cross-entropy counts every class
        "TrainerWCE",
    }


def test_lovasz_names_before_and_after_0_2_0():
    assert parse_trainer_name("TrainerLovasz").include_background
    assert not parse_trainer_name("TrainerLovasz_nobg").include_background
    # the old spelling of the background-counting configuration still names it
    assert parse_trainer_name("TrainerLovasz_CE_bg") == parse_trainer_name("TrainerLovasz_CE")
    with pytest.raises(TrainerNameError, match="Closest valid name: TrainerDiceI\n"):
        parse_trainer_name("TrainerDiceI_nobg")


def test_learning_rate_defaults_and_option():
    assert PRESETS["TrainerDiceIEps"].initial_lr == 1e-3  # Dice-only: see LossConfig.default_lr
    assert PRESETS["TrainerDiceIEps_CE"].initial_lr == 1e-2  # nnU-Net's own rate with a CE term
    fast = parse_trainer_name("TrainerDiceIEps_ep12_it40_lr1e-2")
    assert fast.initial_lr == 1e-2 and fast.lr == 1e-2
    # the default spelled out is the same configuration, so it has no second name
    assert LossConfig(lr=1e-3) == LossConfig() and trainer_name(LossConfig(lr=1e-3)) == "TrainerDiceI"
    with pytest.raises(TrainerNameError, match="Closest valid name: TrainerDiceI\n"):
        parse_trainer_name("TrainerDiceI_lr1e-3")
    with pytest.raises(TrainerNameError, match="Closest valid name: TrainerDiceBI_lr5e-3"):
        parse_trainer_name("TrainerDiceBI_lr0.005")
    assert getattr(T, "TrainerDiceBI_lr5e-3").loss_config.initial_lr == 5e-3


@st.composite
def configs(draw):
    loss = draw(st.sampled_from(list(LOSSES)))
    default_phi, _ = LOSSES[loss]
    phi = None if default_phi is None else draw(st.sampled_from(["I", "CI", "BI", "BCI"]))
    number = st.one_of(st.just(HEURISTIC), st.sampled_from([0.0, 1e-7, 1e-5, 0.5, 12412.0, 2000.0, 1.5e-5]))
    alone = loss in CROSS_ENTROPY_ONLY  # no ε, CE term or background choice
    eps_nr = 1e-7 if alone else draw(number)
    eps_dr = 1e-7 if alone else draw(st.one_of(st.just(eps_nr), number))
    if REGISTRY[loss].takes_eps and eps_dr == 0 and eps_nr != 0:
        eps_dr = eps_nr  # ε_dr = 0 < ε_nr is refused (test_unbounded_eps_is_refused_with_the_reason)
    tversky = loss == "Tversky" and draw(st.booleans())
    return LossConfig(
        loss=loss,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        alpha=0.5 if tversky else 0.3,
        beta=0.25 if tversky else 0.7,
        ce=not alone and draw(st.booleans()),
        include_background=alone or draw(st.booleans()),
        epochs=draw(st.one_of(st.none(), st.integers(1, 2000))),
        iterations=draw(st.one_of(st.none(), st.integers(1, 500))),
        lr=draw(st.one_of(st.none(), st.sampled_from([1e-2, 1e-3, 3e-4, 0.05]))),
        seed=draw(st.one_of(st.none(), st.integers(0, 2**31))),
    )


@given(configs())
def test_every_configuration_has_one_name_and_back(config):
    name = trainer_name(config)
    assert "__" not in name and "." not in name
    assert parse_trainer_name(name) == config


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("TrainerDiceBI_CE_eps1e-5", "TrainerDiceBI_eps1e-5_CE"),
        ("TrainerDiceI_eps0.5", "TrainerDiceI_eps5e-1"),
        ("TrainerDiceI_eps1e-7", "TrainerDiceI"),
        ("TrainerDice", "TrainerDiceI"),
        ("TrainerDicBI", "TrainerDiceBI"),
        ("TrainerLovaszI", "TrainerLovasz"),
        ("TrainerDiceBI_fast", "TrainerDiceBI"),
    ],
)
def test_malformed_names_show_grammar_and_closest_name(name, closest):
    with pytest.raises(TrainerNameError, match="Grammar:") as error:
        parse_trainer_name(name)
    assert f"Closest valid name: {closest}" in str(error.value)


def test_seed_option():
    config = parse_trainer_name("TrainerDiceIEps_ep16_it40_lr1e-2_seed0")
    assert config.seed == 0 and config.epochs == 16 and config.to_dict()["seed"] == 0
    assert PRESETS["TrainerDiceBI"].seed is None  # unseeded, as nnU-Net
    with pytest.raises(TrainerNameError, match="Closest valid name: TrainerDiceBI_seed3"):
        parse_trainer_name("TrainerDiceBI_seed03")
    with pytest.raises(TrainerNameError, match="Closest valid name: TrainerDiceBI_lr1e-2_seed3"):
        parse_trainer_name("TrainerDiceBI_seed3_lr1e-2")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        LossConfig(seed=-1)


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("TrainerDiceI_epsnr1_epsdr0", "TrainerDiceI_eps1"),
        ("TrainerJaccardBI_epsnr1e-5_epsdr0_CE", "TrainerJaccardBI_eps1e-5_CE"),
        ("TrainerDiceI_epsnrH_epsdr0", "TrainerDiceIEps"),  # the heuristic ε is > 0 for every labelled class
    ],
)
def test_unbounded_eps_is_refused_with_the_reason(name, closest):
    """ε_dr = 0 < ε_nr: on an empty map predicted near 0 the loss goes to −∞ (−2.9e28 at ỹ ≈ 1e-30)."""
    with pytest.raises(TrainerNameError, match=r"with eps_dr = 0 makes the \w+ loss unbounded below") as error:
        parse_trainer_name(name)
    assert "use eps_dr > 0" in str(error.value) and f"Closest valid name: {closest}\n" in str(error.value)
    with pytest.raises(ValueError, match="unbounded below"):
        LossConfig(phi="BI", eps_nr=1.0, eps_dr=0.0)


def test_bounded_eps_pairs_are_accepted():
    """ε_nr > ε_dr > 0 is bounded (the loss ≥ 1 − ε_nr/ε_dr; docs/losses.md), ε_nr = 0 with ε_dr = 0 too."""
    assert parse_trainer_name("TrainerDiceI_epsnr2_epsdr1").eps_nr == 2.0
    assert parse_trainer_name("TrainerDiceI_epsnr0_epsdr1").eps_dr == 1.0
    assert parse_trainer_name("TrainerDiceI_eps0").eps_nr == 0.0
    assert parse_trainer_name("TrainerDiceI_epsnr1_epsdrH").eps_dr == HEURISTIC


def test_format_number():
    assert [format_number(v) for v in (1e-7, 0.5, 12412, 2000, 0, 1.5e-5)] == [
        "1e-7",
        "5e-1",
        "12412",
        "2e3",
        "0",
        "15e-6",
    ]


def test_parametric_classes_are_cached_named_and_picklable():
    cls = T.__getattr__("TrainerJaccardBI_eps1e-5_CE")
    assert cls is T.__getattr__("TrainerJaccardBI_eps1e-5_CE")
    assert (cls.__name__, cls.__qualname__, cls.__module__) == (
        "TrainerJaccardBI_eps1e-5_CE",
        "TrainerJaccardBI_eps1e-5_CE",
        "nnunet_dicephi.trainers",
    )
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_lookup_of_foreign_names_raises_attribute_error_only(capsys):
    assert not hasattr(T, "nnUNetTrainer_5epochs")
    assert not hasattr(T, "TrainerDiceQ")
    assert "Closest valid name" in capsys.readouterr().err


def _fresh_python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "NNUNET_DICEPHI_NO_REGISTER")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_startup_hook_registers_without_importing_torch():
    out = _fresh_python("import os, sys; print(os.environ.get('nnUNet_extTrainer')); print('torch' in sys.modules)")
    folder, torch_loaded = out.split()
    assert os.path.isfile(os.path.join(folder, "dicephi_trainers.py"))
    assert torch_loaded == "False"


def test_startup_hook_keeps_user_entries_first_and_can_be_switched_off():
    out = _fresh_python("import os; print(os.environ.get('nnUNet_extTrainer'))", nnUNet_extTrainer="/my/trainers")
    assert out.strip().split(os.pathsep)[0] == "/my/trainers" and len(out.strip().split(os.pathsep)) == 2
    off = _fresh_python("import os; print(os.environ.get('nnUNet_extTrainer'))", NNUNET_DICEPHI_NO_REGISTER="1")
    assert off.strip() == "None"


@pytest.mark.slow
def test_stock_lookup_finds_presets_and_parametric_names():
    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
        "for n in ('TrainerDiceBI', 'TrainerDiceI_eps2e3_CE'):\n"
        "    c = find(n); print(c.__module__, c.__name__, c.loss_config.phi)\n"
    )
    lines = [line for line in _fresh_python(code).splitlines() if line.startswith("nnunet_dicephi.")]
    assert lines == ["nnunet_dicephi.trainers TrainerDiceBI BI", "nnunet_dicephi.trainers TrainerDiceI_eps2e3_CE I"]


def test_the_registry_is_the_one_list_of_losses():
    """Every token names a module of the loss package, the trainers build that module, the grammar
    text lists it: adding a loss is its code plus one registry line."""
    from nnunet_dicephi import losses
    from nnunet_dicephi.loss_config import GRAMMAR, REGISTRY
    from nnunet_dicephi.trainers.base import build_level_loss

    assert set(REGISTRY) == set(LOSSES)
    for token, spec in REGISTRY.items():
        assert f" {token} " in f" {GRAMMAR.split('<Loss>    ', 1)[1].splitlines()[0]} "
        config = LossConfig(loss=token, phi=spec.default_phi)
        assert config.include_background == spec.background
        mime = (torch.ones(3), torch.ones(3)) if spec.dataset_constants else None
        weights = torch.ones(3) if spec.class_frequencies else None
        module = build_level_loss(
            config, eps_nr=1e-7, eps_dr=1e-7, has_regions=False, ignore_label=None, mime=mime, class_weights=weights
        )
        assert type(module) is getattr(losses, spec.module)
        assert module(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))).isfinite()
        assert (getattr(module, "phi", None) == config.phi) or spec.default_phi is None
        assert hasattr(module, "distributed") == spec.gathers_sums

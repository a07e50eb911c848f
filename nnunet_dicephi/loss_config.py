"""Loss configurations, in one torch-free module: the registry of losses, the trainer-name grammar, the presets.

nnU-Net finds a trainer by class name only, so the name carries the whole loss configuration:
``Trainer<Loss>[<Phi>][_<option>]...``, written out in :data:`GRAMMAR` (built from :data:`REGISTRY`
and :data:`OPTIONS`, printed with every rejected name).

Defaults are left out of a name (ε = 1e-7, α = 0.3, β = 0.7, no CE, the loss's own background
default, the default learning rate, unseeded as nnU-Net), so each configuration has exactly one
canonical name; ``TrainerLovasz_bg`` (the name of that configuration before 0.2.0) is accepted
too. Φ = I with the heuristic ε is spelled as in the paper, ``TrainerDiceIEps`` (options follow as usual:
``TrainerDiceIEps_CE``); ``TrainerDiceI_epsH...`` is accepted as a synonym. ``TrainerCE`` and
``TrainerWCE`` are the cross-entropy baselines: they take no Φ, ε, ``CE`` term or background option.
Names never contain ``__`` or ``.`` (nnU-Net splits folder names on ``__``; pickle splits on ``.``).
This module imports neither torch nor nnU-Net, so specs and names are checked in milliseconds.

Adding a loss: its function and module in :mod:`nnunet_dicephi.losses`, and one :data:`REGISTRY`
line here; the grammar, the trainers and the spec checks read the registry (``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, NamedTuple, Union

HEURISTIC = "H"
EpsValue = Union[float, str]  # noqa: UP007 - a number of voxels, or HEURISTIC
Phi = Literal["I", "CI", "BI", "BCI"]
PHIS: tuple[Phi, ...] = ("I", "CI", "BI", "BCI")
"""The reduction sets of the paper: image-wise, class-wise, batch-wise, all-wise."""
DEFAULT_EPS = 1e-7
"""The paper's "small" ε, in voxels: the default of every name, function and module."""


class LossSpec(NamedTuple):
    """What the trainers need to know about one loss token of the grammar."""

    module: str
    """Class name in :mod:`nnunet_dicephi.losses` (nnU-Net's call convention)."""
    default_phi: Phi | None
    """Φ when the name gives none; None for losses that take no Φ."""
    phi_required: bool = False
    """The name must spell Φ (Dice: the paper's configurations differ only in Φ)."""
    takes_eps: bool = True
    takes_alpha_beta: bool = False
    background: bool = False
    """Counts the background channel by default (its reference does)."""
    gathers_sums: bool = True
    """Under DDP, Φ spans every process (the loss is a function of the map sums)."""
    dataset_constants: bool = False
    """Needs the Mime constants a, b from the dataset statistics."""
    cross_entropy_only: bool = False
    """A cross-entropy alone, over every class: it takes no Φ, ε, ``CE`` term or ``nobg``."""
    class_frequencies: bool = False
    """Needs class weights from the class frequencies of the dataset statistics."""


REGISTRY: dict[str, LossSpec] = {
    "Dice": LossSpec("DiceLoss", "I", phi_required=True),
    "VNetDice": LossSpec("VNetDiceLoss", "I"),
    "GDL": LossSpec("GeneralizedDiceLoss", "CI"),
    "Jaccard": LossSpec("JaccardLoss", "I"),
    "Tversky": LossSpec("TverskyLoss", "I", takes_alpha_beta=True),
    "Lovasz": LossSpec("LovaszSoftmaxLoss", None, takes_eps=False, background=True, gathers_sums=False),
    "Mime": LossSpec("MimeLoss", None, takes_eps=False, dataset_constants=True),
    "LeafDice": LossSpec("LeafDiceLoss", "I"),
    "MarginalDice": LossSpec("MarginalDiceLoss", "I"),
    "CE": LossSpec(
        "CrossEntropyLoss", None, takes_eps=False, background=True, gathers_sums=False, cross_entropy_only=True
    ),
    "WCE": LossSpec(
        "WeightedCrossEntropyLoss",
        None,
        takes_eps=False,
        background=True,
        gathers_sums=False,
        cross_entropy_only=True,
        class_frequencies=True,
    ),
}
"""Loss token of the grammar → its module and options. One line per loss."""

LOSSES: dict[str, tuple[Phi | None, bool]] = {
    token: (spec.default_phi, spec.phi_required) for token, spec in REGISTRY.items()
}
"""Loss token → (default Φ or None, Φ must be written): the grammar's view of :data:`REGISTRY`."""
BACKGROUND_BY_DEFAULT = frozenset(token for token, spec in REGISTRY.items() if spec.background)
"""Losses whose reference counts the background channel (Berman's Lovász-Softmax, the cross-entropies)."""
CROSS_ENTROPY_ONLY = frozenset(token for token, spec in REGISTRY.items() if spec.cross_entropy_only)
"""Losses that are a cross-entropy alone: no Φ, ε, ``CE`` term or background choice."""
SEMANTICS = 2
"""Version of what a configuration means, recorded with every run; see CHANGELOG.md.

1: up to 0.1.x. 2 (0.2.0): leaf Dice averages over every subset of Φ (Fidon's); Lovász-Softmax as
Berman's defaults: the background channel counted, the batch's voxels sorted together. A run
continued with ``--c`` or validated with ``--val`` keeps the version its checkpoint recorded
(:func:`loss_options`).
"""
LOSS_FIELDS = ("loss", "phi", "eps_nr", "eps_dr", "alpha", "beta", "ce", "exclusion", "include_background", "manifest")
"""The fields of a :class:`LossConfig` that define the loss itself (the others define the training)."""
PAPER_HEAD, SYNONYM_HEAD = "TrainerDiceIEps", "TrainerDiceI_epsH"

OPTIONS: tuple[tuple[str, str], ...] = (
    ("eps<N> | epsH", "ε_nr = ε_dr = N voxels, or the heuristic ε from the data"),
    ("epsnr<N|H>_epsdr<N|H>", "numerator and denominator ε apart"),
    ("alpha<N>_beta<N>", "Tversky weights of false positives / negatives"),
    ("CE", "add a cross-entropy term that respects unannotated labels"),
    ("excl", "add Shi's exclusion term: unannotated classes kept off the voxels labelled as other classes"),
    ("bg | nobg", "include / leave out the background channel (softmax; default: {background})"),
    ("nomanifest", "ignore the partial-label manifest: unannotated structures count as background (stock nnU-Net)"),
    ("source<ID>", "train on the cases merged from dataset ID only (nnunet-dicephi merge)"),
    ("ep<K>", "train K epochs"),
    ("it<K>", "K training iterations per epoch"),
    ("lr<N>", "initial learning rate (default: 1e-3 without CE, nnU-Net's 1e-2 with CE and for {cross_entropies})"),
    ("seed<K>", "seed the training: weights, patches, augmentation (K ≥ 0)"),
)
"""The name's options, in the order a name writes them, with what each means."""


def _grammar() -> str:
    def column(left: str, right: str) -> str:
        return f"  {left:<33}{right}"

    takes_none = [token for token, spec in REGISTRY.items() if spec.default_phi is None]
    required = [token for token, spec in REGISTRY.items() if spec.phi_required]
    defaults = sorted({spec.default_phi for spec in REGISTRY.values() if spec.default_phi is not None}, key=PHIS.index)
    default_text = ", ".join(
        f"{', '.join(t for t, s in REGISTRY.items() if s.default_phi == phi and not s.phi_required)} to {phi}"
        for phi in defaults
    )
    counted = [token for token in REGISTRY if token in BACKGROUND_BY_DEFAULT]
    background = f"counted by {', '.join(counted)}, left out by the others"
    cross_entropies = [token for token in REGISTRY if token in CROSS_ENTROPY_ONLY]
    lines = [
        "  Trainer<Loss>[<Phi>][_<option>]...",
        "",
        f"  <Loss>    {' | '.join(REGISTRY)}",
        f"  <Phi>     {' | '.join(PHIS)}",
        f"            required for {', '.join(required)}; defaults: {default_text}; {', '.join(takes_none)} take none",
        "  options, in this order, each at most once:",
        *(
            column("  " + left, right.format(background=background, cross_entropies=", ".join(cross_entropies)))
            for left, right in OPTIONS
        ),
        f"  {', '.join(cross_entropies)} are a cross-entropy alone, over every class: no eps, CE, bg or nobg option.",
        "  <N> is a number without a dot: 0, 12412, 1e-5, 2e3, 5e-1 (= 0.5); <K> a positive integer.",
    ]
    return "\n".join(lines)


GRAMMAR = _grammar()
"""The trainer-name grammar as text, from the registry and the options."""


@dataclass(frozen=True)
class LossConfig:
    """Everything that defines a trainer's loss; one-to-one with a canonical trainer name."""

    loss: str = "Dice"
    phi: Phi | None = "I"
    eps_nr: EpsValue = DEFAULT_EPS
    eps_dr: EpsValue = DEFAULT_EPS
    alpha: float = 0.3
    beta: float = 0.7
    ce: bool = False
    exclusion: bool = False
    """Add Shi et al.'s exclusion term (:class:`~nnunet_dicephi.losses.ExclusionLoss`), weight 1."""
    include_background: bool | None = None
    """None: the loss's default (:data:`BACKGROUND_BY_DEFAULT`); always a bool after construction."""
    manifest: bool = True
    """Read the dataset's partial-label manifest; False trains as stock nnU-Net does, every label map
    taken as complete (an unannotated structure is background)."""
    source: int | None = None
    """Train (and validate) on the fold's cases that ``nnunet-dicephi merge`` took from this dataset id."""
    epochs: int | None = None
    iterations: int | None = None
    lr: float | None = None
    """Initial learning rate; None means :attr:`default_lr` (an explicit default is normalised to None)."""
    seed: int | None = None
    """Training seed (Python, NumPy, torch, nnU-Net's augmentation workers); None is nnU-Net's unseeded run."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        default_phi, _ = LOSSES[self.loss]
        if self.include_background is None:
            object.__setattr__(self, "include_background", self.loss in BACKGROUND_BY_DEFAULT)
        elif not isinstance(self.include_background, bool):
            raise ValueError(f"include_background must be True, False or None; got {self.include_background!r}")
        if default_phi is None and self.phi is not None:
            raise ValueError(f"{self.loss} takes no Φ; got phi={self.phi!r}")
        if default_phi is not None and self.phi not in PHIS:
            raise ValueError(f"phi must be one of {', '.join(PHIS)} for {self.loss}; got {self.phi!r}")
        for name in ("eps_nr", "eps_dr"):
            value = getattr(self, name)
            if value != HEURISTIC and not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number of voxels >= 0 or {HEURISTIC!r}; got {value!r}")
        positive_nr = self.eps_nr == HEURISTIC or (isinstance(self.eps_nr, (int, float)) and self.eps_nr > 0)
        if REGISTRY[self.loss].takes_eps and self.eps_dr == 0 and positive_nr:
            # the ratio (2I + ε_nr) / (U + ε_dr) grows without limit on an empty map predicted near 0;
            # ε_nr > ε_dr > 0 is bounded (the ratio ≤ ε_nr / ε_dr) and accepted
            raise ValueError(
                f"eps_nr = {self.eps_nr!r} with eps_dr = 0 makes the {self.loss} loss unbounded below (on a map "
                "with empty labels predicted near 0 the ratio's denominator goes to 0 while its numerator stays "
                "eps_nr); use eps_dr > 0 (epsdr<N>, N > 0, or epsdrH), or eps_nr = 0"
            )
        if (self.alpha, self.beta) != (0.3, 0.7) and self.loss != "Tversky":
            raise ValueError("alpha and beta apply to Tversky only")
        if self.loss in CROSS_ENTROPY_ONLY:
            self._check_cross_entropy_only()
        for name in ("epochs", "iterations"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
        if self.source is not None and (
            not isinstance(self.source, int) or isinstance(self.source, bool) or not 1 <= self.source <= 999
        ):
            raise ValueError(f"source must be an nnU-Net dataset id (1 to 999) or None; got {self.source!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None; got {self.seed!r}")
        if self.lr is not None:
            if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
                raise ValueError(f"lr must be a positive number below 10 or None; got {self.lr!r}")
            if float(self.lr) == self.default_lr:
                object.__setattr__(self, "lr", None)  # one configuration, one name

    def _check_cross_entropy_only(self) -> None:
        if self.ce:
            raise ValueError(f"{self.loss} is a cross-entropy already; it takes no CE term")
        if (self.eps_nr, self.eps_dr) != (DEFAULT_EPS, DEFAULT_EPS):
            raise ValueError(f"{self.loss} has no ε; got eps_nr={self.eps_nr!r}, eps_dr={self.eps_dr!r}")
        if not self.include_background:
            raise ValueError(f"{self.loss} counts every class, background included; it takes no nobg")

    @property
    def default_lr(self) -> float:
        """1e-3 for losses without a CE term, nnU-Net's 1e-2 with one (and for the cross-entropies alone).

        With nnU-Net's SGD (Nesterov momentum 0.99) at 1e-2, Dice-only training with the heuristic ε
        drove the foreground logits to −60…−170 within 150 iterations in 3 of 4 seeds (softmax
        saturated: no gradient is left to recover); at 1e-3 none did (``scripts/lr_collapse.py``).
        A CE term keeps a non-vanishing gradient on labelled voxels, so Dice+CE keeps nnU-Net's rate.
        Every Dice-only preset shares the rate so that Φ and ε are compared at equal training settings.
        A lower rate lowers the risk of that collapse, it does not exclude it (docs/trainers.md, Learning rate).
        """
        return 1e-2 if self.ce or self.loss in CROSS_ENTROPY_ONLY else 1e-3

    @property
    def initial_lr(self) -> float:
        return self.default_lr if self.lr is None else float(self.lr)

    @property
    def uses_heuristic_eps(self) -> bool:
        return HEURISTIC in (self.eps_nr, self.eps_dr)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "initial_lr": self.initial_lr, "trainer_name": trainer_name(self)}

    @classmethod
    def from_record(cls, record: dict) -> LossConfig:
        """The configuration a run recorded (:meth:`to_dict`'s keys; others are ignored)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})

    def same_loss(self, other: LossConfig) -> bool:
        """Whether both configurations define the same loss (:data:`LOSS_FIELDS`)."""
        return all(getattr(self, name) == getattr(other, name) for name in LOSS_FIELDS)


def loss_options(config: LossConfig, semantics: int = SEMANTICS) -> dict:
    """Options of the loss modules that depend on the semantics version (see :data:`SEMANTICS`)."""
    if semantics not in (1, 2):
        raise ValueError(
            f"loss semantics {semantics} is newer than this installation knows ({SEMANTICS}); "
            "install the nnunet-dicephi version that wrote the run"
        )
    if config.loss == "LeafDice":
        return {"mean_over": "labelled" if semantics == 1 else "all"}
    if config.loss == "Lovasz":
        return {"per_image": semantics == 1}
    return {}


class TrainerNameError(ValueError):
    """A trainer name that does not follow the grammar; the message shows it and the closest name."""


def format_number(value: float) -> str:
    """Shortest dot-free spelling: 1e-07 → '1e-7', 0.5 → '5e-1', 12412 → '12412', 2000 → '2e3'."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    if mantissa == 0:
        return "0"
    if exponent == 0:
        return str(mantissa)
    return f"{mantissa}e{exponent}"


def _parse_number(text: str) -> float:
    if not re.fullmatch(r"\d+(e-?\d+)?", text):
        raise ValueError(text)
    return float(text)


def trainer_name(config: LossConfig) -> str:
    """The canonical trainer name of a configuration."""
    default_phi, phi_required = LOSSES[config.loss]
    name = "Trainer" + config.loss
    if config.phi is not None and (phi_required or config.phi != default_phi):
        name += config.phi
    options = []
    if (config.loss, config.phi, config.eps_nr, config.eps_dr) == ("Dice", "I", HEURISTIC, HEURISTIC):
        name, config = PAPER_HEAD, dataclasses.replace(config, eps_nr=DEFAULT_EPS, eps_dr=DEFAULT_EPS)

    def eps_text(value: EpsValue) -> str:
        return HEURISTIC if value == HEURISTIC else format_number(float(value))

    if config.eps_nr == config.eps_dr:
        if config.eps_nr != DEFAULT_EPS:
            options.append("eps" + eps_text(config.eps_nr))
    else:
        options += ["epsnr" + eps_text(config.eps_nr), "epsdr" + eps_text(config.eps_dr)]
    if (config.alpha, config.beta) != (0.3, 0.7):
        options += ["alpha" + format_number(config.alpha), "beta" + format_number(config.beta)]
    if config.ce:
        options.append("CE")
    if config.exclusion:
        options.append("excl")
    if config.include_background != (config.loss in BACKGROUND_BY_DEFAULT):
        options.append("bg" if config.include_background else "nobg")
    if not config.manifest:
        options.append("nomanifest")
    if config.source is not None:
        options.append(f"source{config.source:03d}")
    if config.epochs is not None:
        options.append(f"ep{config.epochs}")
    if config.iterations is not None:
        options.append(f"it{config.iterations}")
    if config.lr is not None:
        options.append("lr" + format_number(config.lr))
    if config.seed is not None:
        options.append(f"seed{config.seed}")
    return "_".join([name, *options])


_HEAD = re.compile(r"Trainer(?P<loss>" + "|".join(sorted(LOSSES, key=len, reverse=True)) + r")(?P<phi>BCI|CI|BI|I)?")


def parse_trainer_name(name: str) -> LossConfig:
    """Configuration of a trainer name; raises :class:`TrainerNameError` for anything not canonical."""
    try:
        config = _parse(name)
    except (ValueError, TypeError) as error:
        raise TrainerNameError(_explain(name, str(error))) from None
    canonical = trainer_name(config)
    if canonical != _paper_spelling(name):
        raise TrainerNameError(_explain(name, "this configuration is spelled differently", suggestion=canonical))
    return config


def _paper_spelling(name: str) -> str:
    if re.match(SYNONYM_HEAD + r"(_|$)", name):
        return PAPER_HEAD + name[len(SYNONYM_HEAD) :]
    head, *tokens = name.split("_")
    if "bg" in tokens and any(
        re.fullmatch(f"Trainer{loss}", head) for loss in BACKGROUND_BY_DEFAULT - CROSS_ENTROPY_ONLY
    ):
        # before 0.2.0 these losses left the background out unless the name said bg
        return "_".join([head, *(token for token in tokens if token != "bg")])
    return name


def _parse(name: str) -> LossConfig:
    if re.match(PAPER_HEAD + r"(_|$)", name):
        name = SYNONYM_HEAD + name[len(PAPER_HEAD) :]
    head, *tokens = name.split("_")
    match = _HEAD.fullmatch(head)
    if match is None:
        raise ValueError(f"{head!r} is not Trainer<Loss>[<Phi>]")
    loss = match["loss"]
    default_phi, _ = LOSSES[loss]
    fields: dict = {"loss": loss, "phi": match["phi"] or default_phi}
    if default_phi is None and match["phi"]:
        raise ValueError(f"{loss} takes no Φ")
    for token in tokens:
        key, value = _option(token)
        if key in fields:
            raise ValueError(f"option {token!r} repeats {key}")
        fields[key] = value
    if "eps" in fields:
        if "eps_nr" in fields or "eps_dr" in fields:
            raise ValueError("eps and epsnr/epsdr exclude each other")
        fields["eps_nr"] = fields["eps_dr"] = fields.pop("eps")
    return LossConfig(**fields)


def _option(token: str) -> tuple[str, object]:
    patterns = [
        (r"eps(H|\d.*)", "eps"),
        (r"epsnr(H|\d.*)", "eps_nr"),
        (r"epsdr(H|\d.*)", "eps_dr"),
        (r"alpha(\d.*)", "alpha"),
        (r"beta(\d.*)", "beta"),
        (r"ep(\d+)", "epochs"),
        (r"it(\d+)", "iterations"),
        (r"lr(\d.*)", "lr"),
        (r"seed(\d+)", "seed"),
        (r"source(\d+)", "source"),
    ]
    if token == "CE":
        return "ce", True
    if token == "excl":
        return "exclusion", True
    if token == "nomanifest":
        return "manifest", False
    if token in ("bg", "nobg"):
        return "include_background", token == "bg"
    for pattern, key in patterns:
        match = re.fullmatch(pattern, token)
        if match is None:
            continue
        text = match[1]
        if key in ("epochs", "iterations", "seed", "source"):
            return key, int(text)
        if text == HEURISTIC:
            return key, HEURISTIC
        try:
            return key, _parse_number(text)
        except ValueError:
            raise ValueError(f"{text!r} in option {token!r} is not a number such as 0, 12412, 1e-5 or 5e-1") from None
    raise ValueError(f"unknown option {token!r}")


def known_names() -> list[str]:
    """Preset names (the ones most users type), for suggestions."""
    return sorted(PRESETS)


def _repaired(name: str) -> str | None:
    """The canonical name after respelling decimal numbers (eps0.5 → eps5e-1) and reordering options.

    An unbounded ``epsnr<N>_epsdr0`` becomes ``eps<N>`` (ε_dr = ε_nr).
    """
    respelled = re.sub(r"\d+\.\d*(e-?\d+)?", lambda m: format_number(float(m[0])), name)
    respelled = re.sub(r"_epsnr(H|[^_]+)_epsdr0(?=_|$)", r"_eps\1", respelled)
    try:
        return trainer_name(_parse(respelled))
    except (ValueError, TypeError):
        return None


def _explain(name: str, problem: str, suggestion: str | None = None) -> str:
    suggestion = suggestion or _repaired(name)
    if suggestion is None:
        close = difflib.get_close_matches(name, known_names(), n=1, cutoff=0.0)
        suggestion = close[0] if close else "TrainerDiceI"
    return (
        f"{name!r} is not a valid nnunet-dicephi trainer name: {problem}.\n"
        f"Closest valid name: {suggestion}\nGrammar:\n{GRAMMAR}"
    )


# --- the named presets: the papers' configurations and their Dice+CE forms ---------------------

_DICE_ONLY = {
    "TrainerDiceI": LossConfig(phi="I"),
    "TrainerDiceCI": LossConfig(phi="CI"),
    "TrainerDiceBI": LossConfig(phi="BI"),
    "TrainerDiceBCI": LossConfig(phi="BCI"),
    "TrainerDiceIEps": LossConfig(phi="I", eps_nr=HEURISTIC, eps_dr=HEURISTIC),
    "TrainerVNetDice": LossConfig(loss="VNetDice"),
    "TrainerGDL": LossConfig(loss="GDL", phi="CI"),
    "TrainerJaccard": LossConfig(loss="Jaccard"),
    "TrainerTversky": LossConfig(loss="Tversky"),
    "TrainerLovasz": LossConfig(loss="Lovasz", phi=None),
    "TrainerMime": LossConfig(loss="Mime", phi=None),
    "TrainerLeafDice": LossConfig(loss="LeafDice"),
    "TrainerMarginalDice": LossConfig(loss="MarginalDice"),
}

_CROSS_ENTROPY_ONLY = {
    "TrainerCE": LossConfig(loss="CE", phi=None),
    "TrainerWCE": LossConfig(loss="WCE", phi=None),
}

PRESETS: dict[str, LossConfig] = {
    **_DICE_ONLY,
    **{f"{name}_CE": LossConfig(**{**config.__dict__, "ce": True}) for name, config in _DICE_ONLY.items()},
    **_CROSS_ENTROPY_ONLY,
}
"""Preset name → configuration. Every other valid name resolves through the grammar."""

"""The sections of a gpusim configuration: keys, units, defaults, ranges and sources (DESIGN §7).

This module is the single home of every default (PARAMETERS.md gives the reasoning). Each field's
``description`` reads ``unit; meaning (typical range); source``; MODEL.md is generated from them.
Source tags: [V] read in the cited source, [R] cited but not re-read, [D] derived, "assumption".

Substrate defaults depend on the substrate's name (``mg``, ``o2``, ``chemokine``) and live in
:data:`SUBSTRATE_DEFAULTS`; a key the user gives always wins over the name's default.
"""

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gpusim.config_errors import NO_VALUE, from_validation_error, is_number, problems

#: A float key: ints are accepted and stored as floats; bools, strings, NaN and infinities are not.
Float = Annotated[float, Strict()]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return value
    raise ValueError("must be a name of letters, digits and '_', not starting with a digit (<= 64 characters)")


#: A substrate or event name: it appears in dotted paths, so it is identifier-like.
Name = Annotated[str, BeforeValidator(_check_name)]


def _vector(n: int, integer: bool, axes: str, low: float | None = None, low_open: bool = False) -> Any:
    """A fixed-length list of numbers (``[z, y, x]``), checked as a whole so the error names the key."""
    what = "integers" if integer else "numbers"
    bound = "" if low is None else f", each {'>' if low_open else '>='} {low:g}"

    def check(value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == n:
            ok = all((isinstance(x, int) and not isinstance(x, bool)) if integer else is_number(x) for x in value)
            if ok and (low is None or all((x > low) if low_open else (x >= low) for x in value)):
                return tuple(value if integer else (float(x) for x in value))
        raise ValueError(f"must be a list of {n} {what} [{axes}]{bound}")

    item = StrictInt if integer else Float
    return Annotated[tuple[(item,) * n], BeforeValidator(check)]


Shape3 = _vector(3, True, "nz, ny, nx", low=1)
Size3 = _vector(3, False, "z, y, x", low=0, low_open=True)
Point3 = _vector(3, False, "z, y, x", low=0)
Ranks3 = _vector(3, True, "z, y, x", low=1)
Shell2 = _vector(2, False, "inner, outer", low=0)

_FACES = ("z_lo", "z_hi", "y_lo", "y_hi", "x_lo", "x_hi")
_MOLAR_UNITS = ("mM", "uM", "nM")
Unit = Literal["mM", "uM", "nM", "mmHg"]
Placement = Literal["tumor", "shell", "uniform", "vessels"]


class Section(BaseModel):
    """Base of every configuration table: unknown keys are errors, instances are immutable.

    Constructing a section directly with bad values raises ``ConfigError`` (not pydantic's error).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise from_validation_error(exc, type(self), data, f"<{type(self).__name__}>") from None

    # Mark this __init__ as pydantic's own, so that nested validation builds sections directly instead
    # of calling it (which would wrap a nested section's ConfigError inside its parent's error).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


# --- grid and time ------------------------------------------------------------------------------------

DEFAULT_SHAPE = (64, 64, 64)
MAX_VOXELS = 2**32  # a global voxel index must fit in uint32 (DESIGN §1)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


class Grid(Section):
    """The voxel grid: one index space for fields, the tumour lattice and the T-cell bins."""

    shape: Shape3 | None = Field(
        DEFAULT_SHAPE,
        description="voxels [nz, ny, nx]; grid size, each >= 1, total < 2^32; give this or size_um, not "
        "both; [64, 64, 64] = 0.96 mm, a 250 µm tumour with ~230 µm margin (PARAMETERS run default)",
    )
    size_um: Size3 | None = Field(
        None,
        description="µm [z, y, x]; block size instead of shape: shape = round(size_um/dx_um), each >= 1",
    )
    dx_um: Float = Field(
        15.0, gt=0, description="µm; voxel edge, one tumour cell (2494 µm³ [V] PhysiCell) per 3375 µm³ voxel"
    )

    @model_validator(mode="before")
    @classmethod
    def _size_replaces_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("size_um") is not None and "shape" not in data:
            return {**data, "shape": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> "Grid":
        if self.shape is not None and self.size_um is not None:
            problems(("size_um", self.size_um, "give grid.shape or grid.size_um, not both"))
        if self.shape is None and self.size_um is None:
            problems(("shape", NO_VALUE, "give grid.shape or grid.size_um"))
        if self.shape is None:
            n = tuple(_round_half_up(s / self.dx_um) for s in self.size_um)
            if min(n) < 1:
                problems(("size_um", self.size_um, f"gives shape {list(n)}; each side must be >= dx_um"))
        n = self.nzyx
        if n[0] * n[1] * n[2] >= MAX_VOXELS:
            key, val = ("shape", self.shape) if self.shape is not None else ("size_um", self.size_um)
            problems((key, val, f"{n[0] * n[1] * n[2]} voxels; must be < 2^32 (a voxel index is uint32)"))
        return self

    @property
    def nzyx(self) -> tuple[int, int, int]:
        """Voxels along (z, y, x), from ``shape`` or from ``size_um``/``dx_um`` (rounded half up)."""
        if self.shape is not None:
            return self.shape
        z, y, x = (_round_half_up(s / self.dx_um) for s in self.size_um)
        return (z, y, x)

    @property
    def extent_um(self) -> tuple[float, float, float]:
        """µm (z, y, x); the block's edge lengths, ``nzyx * dx_um``."""
        z, y, x = (n * self.dx_um for n in self.nzyx)
        return (z, y, x)


class Time(Section):
    """Time stepping."""

    dt_min: Float = Field(1.0, gt=0, description="min; agent and field step (fields sub-step inside it)")
    duration_min: Float = Field(
        1440.0, gt=0, description="min; run length when `gpusim run` is given neither --minutes nor --days"
    )


# --- substrates ---------------------------------------------------------------------------------------


def _check_face(value: Any) -> Any:
    if isinstance(value, str) and value in ("zero_flux", "serum"):
        return value
    if is_number(value) and value >= 0:
        return float(value)
    raise ValueError("must be 'zero_flux', 'serum' or a Dirichlet value >= 0 in the substrate's unit")


Face = Annotated[Union[Literal["zero_flux", "serum"], Float], BeforeValidator(_check_face)]
_FACE_TEXT = (
    "substrate unit or keyword; 'zero_flux' (no flux), 'serum' (Dirichlet at the current serum value) "
    "or a number (Dirichlet value)"
)


class Boundary(Section):
    """Boundary condition per face of the block; an absent face is zero-flux."""

    z_lo: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face z = 0")
    z_hi: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face z = nz*dx")
    y_lo: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face y = 0")
    y_hi: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face y = ny*dx")
    x_lo: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face x = 0")
    x_hi: Face = Field("zero_flux", description=f"{_FACE_TEXT}; face x = nx*dx")


class UptakeRates(Section):
    """Michaelis–Menten uptake by one cell type, per cell (scaled by V_cell/V_voxel in the solver)."""

    vmax_per_min: Float = Field(
        0.0, ge=0, description="substrate unit/min; maximal uptake as the concentration change of one cell volume"
    )
    km: Float = Field(
        1.0, gt=0, description="substrate unit; half-saturation concentration (irrelevant when vmax_per_min = 0)"
    )


class Uptake(Section):
    """Uptake by live tumour cells and by T cells."""

    tumor: UptakeRates = Field(default_factory=UptakeRates, description="uptake by a LIVE tumour cell")
    tcell: UptakeRates = Field(default_factory=UptakeRates, description="uptake by a T cell")


class Secretion(Section):
    """Secretion per cell (scaled by V_cell/V_voxel in the solver)."""

    tumor: Float = Field(
        0.0, ge=0, description="substrate unit/min; secretion by a LIVE tumour cell into one cell volume"
    )


def _src(value: Any, source: str) -> tuple[Any, str]:
    return (value, source)


#: Name-dependent substrate defaults: dotted key -> (value, source). The one table of them
#: (PARAMETERS.md §1). ``serum`` defaults to ``initial`` for every substrate.
SUBSTRATE_DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    "mg": {
        "unit": _src("mM", "ionised (free) Mg²⁺, the form LFA-1's MIDAS site binds (DESIGN §1)"),
        "D_um2_per_min": _src(2.0e4, "[D] free Mg²⁺ D₀ 0.70e-5 cm²/s at 25 °C (Li & Gregory 1974 [V]), "
                              "×1.3 at 37 °C, ÷ tortuosity² 1.6² (Nicholson & Syková [R])"),
        "decay_per_min": _src(0.0, "Mg²⁺ is not destroyed; it leaves tissue by vessel exchange only"),
        "initial": _src(0.47, "[D] 0.55 ionised × 0.85 mM total serum (interval 0.70–1.10 [V] RCPA/AACB); "
                        "range 0.40–0.60; also the serum default"),
        "boundary": _src("zero_flux", "assumption: vessels supply the whole block"),
        "vessel_supply_per_min": _src(2.5, "[D] tissue exchange k̄ = P·S/V ≈ 0.05/min [R] ÷ "
                                      "vessels.voxel_fraction 0.02; range 0.25–25"),
        "uptake.tumor.vmax_per_min": _src(0.008, "[D] a dividing cell doubles its 10–15 mM Mg (lymphocytes "
                                          "9.6 mmol/L [V]) per 23 h cycle; range 0.003–0.016"),
        "uptake.tumor.km": _src(0.1, "assumption: MagT1/TRPM7 affinities are sub-mM [R]; range 0.03–0.3"),
        "uptake.tcell.vmax_per_min": _src(0.0008, "assumption: 0.1 × tumour (the PhysiCell O₂ ratio)"),
        "uptake.tcell.km": _src(0.1, "assumption: as the tumour cell"),
    },
    "o2": {
        "unit": _src("mmHg", "partial pressure"),
        "D_um2_per_min": _src(1.0e5, "[V] PhysiCell cancer_immune PhysiCell_settings.xml (BioFVM)"),
        "decay_per_min": _src(0.1, "[V] PhysiCell cancer_immune PhysiCell_settings.xml"),
        "initial": _src(38.0, "[V] PhysiCell 'physioxic' 38 mmHg (cancer_immune_3D.cpp); also the serum default"),
        "boundary": _src(38.0, "[V] PhysiCell Dirichlet 38 mmHg on every face"),
        "vessel_supply_per_min": _src(1.0e4, "[D] k_v ≫ 6D/dx² = 2.7e3/min keeps a vessel voxel within "
                                      "~1.5 mmHg of serum while it feeds ~49 tumour voxels"),
        "uptake.tumor.vmax_per_min": _src(380.0, "[D] PhysiCell cancer-cell uptake 10/min [V] × 38 mmHg; "
                                          "range 200–700"),
        "uptake.tumor.km": _src(1.0, "assumption: apparent mitochondrial Km ~1 mmHg [R]"),
        "uptake.tcell.vmax_per_min": _src(38.0, "[D] 0.1 × tumour ([V] PhysiCell immune_o2_relative_uptake)"),
        "uptake.tcell.km": _src(1.0, "assumption: as the tumour cell"),
        "method": _src("steady", "[D] O₂ relaxes in ~0.1 min; lod would need n_sub ≈ 2800"),
        "update_every_min": _src(10.0, "assumption: cell counts change < 1 % in 10 min; range 1–30"),
    },
    "chemokine": {
        "unit": _src("nM", "concentration of a CXCL9/10-like chemoattractant"),
        "D_um2_per_min": _src(1000.0, "[V] PhysiCell immunostimulatory factor; range 100–5000"),
        "decay_per_min": _src(0.016, "[V] PhysiCell (half-life 43 min); range 0.005–0.05"),
        "initial": _src(0.0, "assumption: serum chemokine ≈ 0; also the serum default"),
        "boundary": _src("zero_flux", "assumption: decay clears it"),
        "vessel_supply_per_min": _src(0.0, "assumption: serum chemokine ≈ 0"),
        "secretion_per_min.tumor": _src(0.1, "assumption: PhysiCell's rate is dimensionless; s/λ ≈ 6 nM "
                                        "inside a large tumour; range 0.01–1"),
    },
}


def substrate_defaults(name: str) -> dict[str, Any]:
    """The name-dependent defaults of a substrate as a nested dict ({} for a name without defaults)."""
    out: dict[str, Any] = {}
    for dotted, (value, _source) in SUBSTRATE_DEFAULTS.get(name, {}).items():
        node = out
        *heads, last = dotted.split(".")
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return out


def _merge_under(defaults: dict, given: dict) -> dict:
    """``given`` on top of ``defaults``, recursing where both hold a table."""
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_under(out[key], value)
        else:
            out[key] = value
    return out


class Substrate(Section):
    """One diffusing substrate on the voxel grid; values in its ``unit``. Defaults by name: see
    ``SUBSTRATE_DEFAULTS`` (another name must give ``unit`` and ``D_um2_per_min``)."""

    name: Name = Field(description="identifier; the substrate's name, unique (mg, o2, chemokine have defaults)")
    unit: Unit = Field(description="unit of initial, serum, boundary values, uptake and secretion")
    D_um2_per_min: Float = Field(ge=0, description="µm²/min; diffusion coefficient in tissue")
    decay_per_min: Float = Field(0.0, ge=0, description="1/min; linear decay rate")
    initial: Float = Field(0.0, ge=0, description="substrate unit; initial value everywhere (init = 'given')")
    serum: Float = Field(ge=0, description="substrate unit; serum (blood) value fed at vessels; default: initial")
    boundary: Boundary = Field(
        default_factory=Boundary,
        description="'zero_flux', 'serum', a Dirichlet value (substrate unit) or a table of faces "
        "{z_lo, z_hi, y_lo, y_hi, x_lo, x_hi}, each one of those; absent faces zero-flux",
    )
    vessel_supply_per_min: Float = Field(
        0.0, ge=0, description="1/min; exchange rate k_v at a vessel voxel, source k_v·(serum − c)"
    )
    uptake: Uptake = Field(default_factory=Uptake, description="Michaelis–Menten uptake per cell type")
    secretion_per_min: Secretion = Field(default_factory=Secretion, description="secretion per cell type")
    substeps: Literal["auto"] | StrictInt = Field(
        "auto",
        description="field steps per dt; 'auto': smallest n with (dt/n)·max(λ + Vmax/Km, k_v) <= 0.1 (DESIGN "
        "rule 1), or an integer >= 1",
    )
    method: Literal["lod", "steady"] = Field(
        "lod", description="'lod': time-stepped (solver key); 'steady': coupled implicit steady solve, refreshed"
    )
    update_every_min: Float = Field(
        10.0, gt=0, description="min; refresh interval of a method = 'steady' substrate"
    )

    @model_validator(mode="before")
    @classmethod
    def _name_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("name")
        merged = _merge_under(substrate_defaults(name) if isinstance(name, str) else {}, data)
        if "serum" not in merged:
            initial = merged.get("initial", 0.0)
            merged["serum"] = float(initial) if is_number(initial) and initial >= 0 else 0.0
        return merged

    @field_validator("boundary", mode="before")
    @classmethod
    def _boundary_table(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        face = _check_face(value)  # one value for all six faces
        return {f: face for f in _FACES}

    @field_validator("substeps", mode="before")
    @classmethod
    def _substeps(cls, value: Any) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("must be 'auto' or an integer >= 1")

    @property
    def is_molar(self) -> bool:
        """True for an amount-per-volume unit (mM, uM, nM), where doses in µmol make sense."""
        return self.unit in _MOLAR_UNITS

    def faces(self) -> tuple[tuple[str, float | None], ...]:
        """(kind, value) per face in the order z_lo, z_hi, y_lo, y_hi, x_lo, x_hi.

        kind is 'zero_flux', 'serum' or 'value'; value is the Dirichlet value (substrate unit) for
        'value' and None otherwise.
        """
        out = []
        for face in _FACES:
            b = getattr(self.boundary, face)
            out.append(("value", b) if isinstance(b, float) else (b, None))
        return tuple(out)


# --- run control --------------------------------------------------------------------------------------


class Output(Section):
    """What the run store records and how often (writers take these schedules)."""

    fields_every_min: Float = Field(60.0, gt=0, description="min; interval between field snapshots")
    tumor_every_min: Float = Field(60.0, gt=0, description="min; interval between tumour-lattice snapshots")
    tcells_every_min: Float = Field(360.0, gt=0, description="min; interval between T-cell snapshots")
    tracks_every_min: Float | None = Field(
        None, gt=0, description="min; interval of track records of a fixed random T-cell subset; None: no tracks"
    )
    tracks_count: StrictInt = Field(
        0, ge=0, description="T cells; size of the tracked subset (needs tracks_every_min)"
    )
    events: StrictBool = Field(False, description="record engage/hit/kill/disengage events (step, voxel, uid)")
    checkpoint_every_steps: StrictInt | None = Field(
        None, ge=1, description="steps; checkpoint interval in steps; None: off"
    )
    checkpoint_every_wall_min: Float | None = Field(
        30.0, gt=0, description="min of wall-clock time; checkpoint interval; None: off"
    )
    write_queue_steps: StrictInt = Field(
        2, ge=0, description="steps; how many steps of output (host copies) may wait for the background "
        "writer before the step loop waits; 0: write inside the step"
    )

    @model_validator(mode="after")
    def _tracks(self) -> "Output":
        if self.tracks_count > 0 and self.tracks_every_min is None:
            problems(("tracks_every_min", NO_VALUE, "needed when tracks_count > 0 (set an interval, e.g. 1.0)"))
        if self.tracks_every_min is not None and self.tracks_count == 0:
            problems(("tracks_count", 0, "must be >= 1 when tracks_every_min is set (or drop tracks_every_min)"))
        return self


class Parallel(Section):
    """MPI domain decomposition."""

    ranks_zyx: Ranks3 | None = Field(
        None, description="ranks [z, y, x]; process grid, each >= 1 and <= the grid's voxels on that axis; "
        "None: chosen from the number of MPI ranks"
    )
    lod_mode: Literal["partitioned", "bitwise"] = Field(
        "partitioned",
        description="'partitioned': LOD lines that cross ranks solved where they lie (a reduced system of a few "
        "numbers per line; fields within ~1e-7 of one rank per step, not bitwise); 'bitwise': lines moved whole "
        "to one rank (transposes of the field), results identical to one rank, for verification",
    )
    balance: Literal["cells", "even"] = Field(
        "cells",
        description="box boundaries of the cell step: 'cells' re-cuts them along each axis of the process "
        "grid every 10 steps so each rank holds an equal share of T cells and tumour cells; 'even': equal "
        "boxes (the results are the same either way)",
    )

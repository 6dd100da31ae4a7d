"""Configuration of the cells and vessels: [vessels], [tumor], [tcells] and [tcells.lfa1] (DESIGN §7).

Defaults and sources from PARAMETERS.md §2–5; each ``description`` reads ``unit; meaning (typical
range); source``. An absent section means that part of the model is absent.
"""

from typing import Literal

from pydantic import Field, StrictBool, StrictInt, model_validator

from gpusim.config_errors import NO_VALUE, problems
from gpusim.config_schema import Float, Placement, Point3, Section, Shell2

#: Default T-cell placement shell outside the tumour surface, µm ([V] PhysiCell cancer_immune).
DEFAULT_SHELL_UM = (30.0, 105.0)


class Vessels(Section):
    """Blood vessels: a static voxel mask that supplies substrates and recruits T cells."""

    kind: Literal["shell", "random", "file"] = Field(
        "random",
        description="layout; 'random': axis-aligned capillary segments throughout the block, the tumour grows "
        "around them; 'shell': the block's outer voxel layer; 'file': a mask read from path; assumption: "
        "perfused host vessels throughout the block (PARAMETERS §5)",
    )
    voxel_fraction: Float = Field(
        0.02, gt=0, lt=1,
        description="fraction of voxels; vessel density of kind 'random' (typical 0.005–0.05); assumption: "
        "intercapillary distances 100–200 µm in tumours [R]",
    )
    segment_length_um: Float = Field(
        150.0, gt=0,
        description="µm; length of each random capillary segment laid along a grid axis; assumption: "
        "capillary segments between branch points are ~50–200 µm [R]",
    )
    tumor_voxel_fraction: Float | None = Field(
        None, ge=0, lt=1,
        description="fraction of voxels; vessel density inside the initial tumour (0: avascular tumour); None: "
        "same as voxel_fraction; assumption: the tumour grows around host vessels",
    )
    path: str | None = Field(
        None,
        description="file path; .npy array of shape grid.nzyx, nonzero = vessel; required for kind 'file' "
        "(relative to the TOML file when read by Config.from_toml)",
    )
    prune_in_necrosis: StrictBool = Field(
        False, description="remove vessel voxels that end up in necrotic tissue; assumption: static network "
        "keeps runs comparable"
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> "Vessels":
        if self.kind == "file" and not self.path:
            problems(("path", NO_VALUE, "required when vessels.kind = 'file' (a .npy vessel mask)"))
        if self.kind != "file" and self.path is not None:
            problems(("path", self.path, f"only read when vessels.kind = 'file' (kind is {self.kind!r})"))
        return self

    @property
    def tumor_fraction(self) -> float:
        """Fraction of the initial tumour's voxels that are vessels (``tumor_voxel_fraction`` resolved)."""
        return self.voxel_fraction if self.tumor_voxel_fraction is None else self.tumor_voxel_fraction


class Tumor(Section):
    """On-lattice tumour: at most one cell per voxel."""

    center_um: Point3 | None = Field(
        None, description="µm [z, y, x]; centre of the initial tumour sphere; None: the grid centre"
    )
    initial_radius_um: Float = Field(
        250.0, ge=0, description="µm; radius of the initial sphere of LIVE cells (typical 100–500); "
        "[V] PhysiCell sample"
    )
    cell_volume_um3: Float = Field(
        2494.0, gt=0, description="µm³; tumour-cell volume, scales uptake and secretion by V_cell/V_voxel; "
        "[V] PhysiCell default cell volume"
    )
    cycle_rate_per_min: Float = Field(
        7.2e-4, ge=0, description="1/min; division rate at saturating O₂ (mean 23 h; typical 4e-4–1.2e-3); "
        "[V] "
        "PhysiCell cancer_immune 'live' cycle rate"
    )
    o2_prolif_threshold_mmHg: Float = Field(
        5.0, ge=0, description="mmHg; O₂ below which cells do not divide (typical 2.5–10); [V] PhysiCell core"
    )
    o2_prolif_saturation_mmHg: Float = Field(
        38.0, ge=0, description="mmHg; O₂ at which division reaches cycle_rate_per_min, linear in between "
        "(typical 38–160); [V] PhysiCell cancer_immune"
    )
    o2_necrosis_threshold_mmHg: Float = Field(
        5.0, ge=0, description="mmHg; O₂ below which LIVE cells turn NECROTIC (typical 2.5–10); "
        "[V] PhysiCell core"
    )
    o2_necrosis_max_mmHg: Float = Field(
        2.5, ge=0, description="mmHg; O₂ at and below which the necrosis rate is maximal (typical 1–5); "
        "[V] PhysiCell core"
    )
    necrosis_max_per_min: Float = Field(
        2.78e-3, ge=0, description="1/min; maximal necrosis rate, 1/(6 h); [V] PhysiCell max_necrosis_rate"
    )
    apoptosis_per_min: Float = Field(
        0.0, ge=0, description="1/min; spontaneous apoptosis rate (typical 0–5.3e-5); [V] cancer_immune sets 0"
    )
    apoptotic_clear_min: Float = Field(
        516.0, ge=0, description="min; a DEAD (apoptotic) cell is cleared after this time; "
        "[V] PhysiCell apoptosis phase"
    )
    necrotic_clear_min: Float = Field(
        86400.0, ge=0, description="min; a NECROTIC cell is cleared after this time (60 d: necrotic cores "
        "persist); [V] PhysiCell necrotic lysed phase"
    )
    hits_to_kill: StrictInt = Field(
        3, ge=1, le=255, description="hits; damage at which a tumour cell dies (1 = one-hit model); [V] "
        "Weigelin et al. 2021, ~3 serial sublethal hits"
    )
    hit_recovery_min: Float = Field(
        50.0, ge=0, description="min; one hit is repaired after this time without a new hit (0: off); [V] "
        "Weigelin et al. 2021, hits add up only when < ~50 min apart"
    )
    mg_growth_km_mM: Float = Field(
        0.0, ge=0, description="mM ionised; Monod constant of Mg-dependent division Mg/(K + Mg); 0: off "
        "(sensitivity runs use 0.1); assumption (Nasulewicz et al. [V abstract])"
    )

    @model_validator(mode="after")
    def _o2_order(self) -> "Tumor":
        if self.o2_prolif_saturation_mmHg <= self.o2_prolif_threshold_mmHg:
            problems(("o2_prolif_saturation_mmHg", self.o2_prolif_saturation_mmHg,
                      f"must be > o2_prolif_threshold_mmHg = {self.o2_prolif_threshold_mmHg!r}"))
        if self.o2_necrosis_max_mmHg >= self.o2_necrosis_threshold_mmHg:
            problems(("o2_necrosis_max_mmHg", self.o2_necrosis_max_mmHg,
                      f"must be < o2_necrosis_threshold_mmHg = {self.o2_necrosis_threshold_mmHg!r} "
                      "(the rate rises from the threshold to its maximum at lower O₂)"))
        return self


class LFA1(Section):
    """Mg²⁺-dependent LFA-1 activation: A* = A_floor + (1 − A_floor)·Mg^n/(K^n + Mg^n), relaxed with tau."""

    K_half_mM: Float = Field(
        0.33, gt=0, description="mM ionised; Mg²⁺ at half-maximal extension (typical 0.1–0.55); assumption: "
        "low-normal range (Lötscher et al. 2022 [V] abstract), 0.6 mM total × 0.55"
    )
    hill_n: Float = Field(
        2.0, gt=0, description="dimensionless; Hill coefficient (typical 1–4); assumption: cooperative "
        "extension and clustering"
    )
    tau_min: Float = Field(
        5.0, ge=0, description="min; relaxation time of A toward A* (0: instant); assumption: surface "
        "re-equilibrates in minutes"
    )
    A_floor: Float = Field(
        0.05, ge=0, lt=1, description="fraction; Mg-independent activation (typical 0–0.2); assumption: "
        "TCR-driven inside-out activation remains"
    )


class TCells(Section):
    """Off-lattice CD8⁺ T cells."""

    initial_count: StrictInt = Field(
        1000, ge=0, description="cells; T cells at t = 0; assumption: ≈ 5 % of a 250 µm tumour's cells"
    )
    placement: Placement = Field(
        "tumor", description="where initial T cells start: 'tumor' (in the tumour), 'shell' (shell_um "
        "outside its surface), 'uniform' (whole block), 'vessels' (at vessel voxels)"
    )
    shell_um: Shell2 = Field(
        DEFAULT_SHELL_UM, description="µm [inner, outer]; distance outside the tumour surface for placement "
        "'shell'; [V] PhysiCell cancer_immune"
    )
    cell_volume_um3: Float = Field(
        500.0, gt=0, description="µm³; T-cell volume, scales T-cell uptake (typical 300–700); [R]"
    )
    speed_um_per_min: Float = Field(
        4.0, ge=0, description="µm/min; migration speed (typical 1–10); assumption in the intravital range "
        "(Boissonnas et al. 2007 [V]); speed·dt must be <= dx/2"
    )
    persistence_min: Float = Field(
        5.0, ge=0, description="min; mean time a direction is kept, renewed at rate 1/persistence (0: each "
        "step); assumption, PhysiCell sample 10 [V]"
    )
    chemotaxis_bias: Float = Field(
        0.5, ge=0, le=1, description="fraction; bias up the chemokine gradient (typical 0–0.9); [V] PhysiCell "
        "migration_bias"
    )
    max_per_voxel: StrictInt = Field(
        4, ge=0, le=255, description="cells; capacity of a voxel without a tumour cell; [D] 3375 µm³ holds "
        "~4–6 T cells"
    )
    max_per_voxel_with_tumor: StrictInt = Field(
        1, ge=0, le=255, description="cells; capacity of a voxel with a LIVE or NECROTIC cell; [D] 881 µm³ left"
    )
    k_on_per_min: Float = Field(
        0.3, ge=0, description="1/min; engagement rate at A = 1 (typical 0.05–1); "
        "[D] PhysiCell attachment 0.2/min [V] ÷ A*(normal serum) 0.69"
    )
    k_hit_per_min: Float = Field(
        0.05, ge=0, description="1/min; hit rate of an engaged T cell at A = 1 (typical 0.01–0.2); [D] "
        "PhysiCell one-hit rate 1/15 min [V], Weigelin et al. 2021"
    )
    synapse_min: Float = Field(
        30.0, gt=0, description="min; mean (exponential) synapse duration (typical 8–60); [V] PhysiCell 60 min, "
        "Jenkins et al. 2015 8.5–40 min"
    )
    apoptosis_per_min: Float = Field(
        6.94e-5, ge=0, description="1/min; T-cell death rate (mean survival 10 d); "
        "[V] PhysiCell cancer_immune_3D.cpp"
    )
    prolif_prob_per_kill: Float = Field(
        0.2, ge=0, le=1, description="probability; division after a kill (typical 0–0.5); assumption"
    )
    division_delay_min: Float = Field(
        720.0, ge=0, description="min; delay from kill to division (typical 360–1440); assumption [R]"
    )
    exhaust_per_engagement: Float = Field(
        0.014, ge=0, le=1, description="fraction; (1−E) ← (1−E)·(1 − e) per engagement, ~50 "
        "engagements halve function; "
        "assumption"
    )
    exhausted_below: Float = Field(
        0.25, ge=0, le=1, description="fraction; a T cell counts as exhausted when 1 − E is below this "
        "(reporting); assumption"
    )
    recruit_per_vessel_per_min: Float = Field(
        1e-4, ge=0, description="cells/min per vessel voxel at saturating chemokine (typical 1e-5–1e-3); "
        "assumption: keeps TILs at a few %"
    )
    recruit_chemokine_half_nM: Float = Field(
        1.0, gt=0, description="nM; chemokine at half-maximal recruitment (typical 0.1–10); assumption"
    )
    recruit_scales_with_serum_mg: StrictBool = Field(
        True, description="recruitment × A*(serum Mg); assumption: LFA-1/ICAM-1 mediates arrest on endothelium"
    )
    lfa1: LFA1 = Field(default_factory=LFA1, description="Mg²⁺-dependent LFA-1 activation")

    @model_validator(mode="after")
    def _shell_order(self) -> "TCells":
        if self.shell_um[0] > self.shell_um[1]:
            problems(("shell_um", list(self.shell_um), "inner must be <= outer"))
        return self

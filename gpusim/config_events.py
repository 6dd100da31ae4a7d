"""Therapy schedule: ``[[events]]``, a union discriminated by ``type`` (DESIGN §1 rule 7, §7).

Every event has a unique ``name`` (it addresses the event in overrides: ``events.implant.rate_umol_per_min``),
a start ``time_min`` and optional ``duration_min``, ``repeat_every_min`` and ``repeat_count``. Values are in
the named substrate's unit; doses (µmol) need a molar unit. Checks that need the rest of the
configuration (the substrate exists, the centre lies in the grid) are made by ``Config``.
"""

from typing import Annotated, Literal, Union

from pydantic import Field, StrictInt, model_validator

from gpusim.config_cells import DEFAULT_SHELL_UM
from gpusim.config_errors import NO_VALUE, problems
from gpusim.config_schema import Float, Name, Placement, Point3, Section, Shell2


class _EventBase(Section):
    name: Name = Field(description="identifier; the event's name, unique among events")
    time_min: Float = Field(0.0, ge=0, description="min; simulated time of the (first) start")
    duration_min: Float | None = Field(
        None, gt=0, description="min; how long it acts (serum: then reverts; implant: release; hold: clamp); "
        "None: to the end of the run"
    )
    repeat_every_min: Float | None = Field(
        None, gt=0, description="min; interval between repeats (start to start); None: once"
    )
    repeat_count: StrictInt = Field(
        1, ge=1, description="occurrences in all, with repeat_every_min (1: once)"
    )

    @model_validator(mode="after")
    def _timing(self) -> "_EventBase":
        if self.repeat_count > 1 and self.repeat_every_min is None:
            problems(("repeat_every_min", NO_VALUE, f"needed when repeat_count = {self.repeat_count} > 1"))
        if self.repeat_every_min is not None and self.duration_min is not None:
            if self.duration_min > self.repeat_every_min:
                problems(("duration_min", self.duration_min,
                          f"must be <= repeat_every_min = {self.repeat_every_min!r} (repeats would overlap)"))
        return self


class _Instant(_EventBase):
    """An event that acts at one instant: ``duration_min`` has no meaning."""

    @model_validator(mode="after")
    def _no_duration(self) -> "_Instant":
        if self.duration_min is not None:
            problems(("duration_min", self.duration_min,
                      f"a {self.type} event acts at one instant; remove duration_min"))
        return self


class SerumEvent(_EventBase):
    """Set or ramp a substrate's serum value (diet, infusion); reverts after ``duration_min`` if given."""

    type: Literal["serum"] = Field("serum", description="event type")
    substrate: Name = Field(description="name of a declared substrate")
    value: Float = Field(ge=0, description="substrate unit; the new serum value")
    ramp_min: Float = Field(0.0, ge=0, description="min; linear ramp from the current value (0: a step)")


class BolusEvent(_Instant):
    """Add an amount of substrate uniformly in a sphere (washes out within tens of minutes)."""

    type: Literal["bolus"] = Field("bolus", description="event type")
    substrate: Name = Field(description="name of a declared substrate with a molar unit")
    center_um: Point3 = Field(description="µm [z, y, x]; sphere centre, inside the grid")
    radius_um: Float = Field(gt=0, description="µm; sphere radius")
    amount_umol: Float = Field(gt=0, description="µmol; amount added (1 mM = 1e-12 µmol/µm³)")


class ImplantEvent(_EventBase):
    """A depot releasing substrate at a constant rate into a sphere (radius 0: the centre voxel)."""

    type: Literal["implant"] = Field("implant", description="event type")
    substrate: Name = Field(description="name of a declared substrate with a molar unit")
    center_um: Point3 = Field(description="µm [z, y, x]; depot centre, inside the grid")
    radius_um: Float = Field(ge=0, description="µm; release sphere radius (0: the voxel holding the centre)")
    rate_umol_per_min: Float = Field(
        ge=0, description="µmol/min; release rate (intratumoral_mg: 3.5e-5, range 1e-5–1e-4); "
        "[D] PARAMETERS §6"
    )


class HoldEvent(_EventBase):
    """Clamp a region (the tumour, or a sphere) to a value."""

    type: Literal["hold"] = Field("hold", description="event type")
    substrate: Name = Field(description="name of a declared substrate")
    region: Literal["tumor", "sphere"] = Field(
        "sphere", description="'tumor': voxels holding LIVE tumour cells; 'sphere': center_um + radius_um"
    )
    center_um: Point3 | None = Field(None, description="µm [z, y, x]; sphere centre (region 'sphere')")
    radius_um: Float | None = Field(None, ge=0, description="µm; sphere radius (region 'sphere')")
    value: Float = Field(ge=0, description="substrate unit; the clamped value")

    @model_validator(mode="after")
    def _region_keys(self) -> "HoldEvent":
        if self.region == "sphere":
            missing = [(k, NO_VALUE, "required when region = 'sphere'")
                       for k in ("center_um", "radius_um") if getattr(self, k) is None]
            if missing:
                problems(*missing)
        else:
            given = [(k, getattr(self, k), "only used with region = 'sphere'")
                     for k in ("center_um", "radius_um") if getattr(self, k) is not None]
            if given:
                problems(*given)
        return self


class TCellInfusionEvent(_Instant):
    """Add T cells (adoptive transfer)."""

    type: Literal["tcell_infusion"] = Field("tcell_infusion", description="event type")
    count: StrictInt = Field(ge=1, description="cells; T cells added (PARAMETERS §6: 7500)")
    placement: Placement = Field("shell", description="where they appear (as tcells.placement)")
    shell_um: Shell2 = Field(
        DEFAULT_SHELL_UM, description="µm [inner, outer]; distance outside the tumour surface for 'shell'; "
        "[V] PhysiCell cancer_immune"
    )

    @model_validator(mode="after")
    def _shell_order(self) -> "TCellInfusionEvent":
        if self.shell_um[0] > self.shell_um[1]:
            problems(("shell_um", list(self.shell_um), "inner must be <= outer"))
        return self


Event = Annotated[
    Union[SerumEvent, BolusEvent, ImplantEvent, HoldEvent, TCellInfusionEvent],
    Field(discriminator="type"),
]
EVENT_TYPES = {"serum": SerumEvent, "bolus": BolusEvent, "implant": ImplantEvent, "hold": HoldEvent,
               "tcell_infusion": TCellInfusionEvent}

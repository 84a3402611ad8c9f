//! Which map of the logits to the sampler's z a row kernel's module is joined with
//! (`shaders/sampler/`).

/// How a row kernel maps a row's logits to the sampler's z = s/τ_r (SPEC "The
/// sampler's distribution").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SamplerMap {
    /// The logits under the call's one temperature.
    #[default]
    Off,
    /// Per-row temperatures (`sampler/tau_rows.wgsl`).
    Temperatures,
    /// The logit softcap, with or without per-row temperatures (`sampler/cap_tanh.wgsl`
    /// beside `tau_rows.wgsl`).
    Softcap,
}

impl SamplerMap {
    pub const ALL: [SamplerMap; 3] = [
        SamplerMap::Off,
        SamplerMap::Temperatures,
        SamplerMap::Softcap,
    ];

    /// The map of a call with (or without) a softcap and per-row temperatures.
    pub(crate) fn of(softcap: bool, temps: bool) -> Self {
        match (softcap, temps) {
            (true, _) => SamplerMap::Softcap,
            (false, true) => SamplerMap::Temperatures,
            (false, false) => SamplerMap::Off,
        }
    }

    /// The module binds the per-row temperatures (binding 8).
    pub(crate) fn binds_temps(self) -> bool {
        self != SamplerMap::Off
    }

    pub(super) fn suffix(self) -> &'static str {
        match self {
            SamplerMap::Off => "",
            SamplerMap::Temperatures => "/temps",
            SamplerMap::Softcap => "/softcap",
        }
    }
}

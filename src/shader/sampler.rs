//! Which map of the logits to the sampler's z a row kernel's module is joined with
//! (`shaders/sampler/`).

/// How a row kernel maps a row's logits to the sampler's z = s/τ_r
/// (docs/MATH.md#the-samplers-distribution).
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
    /// A given kept set in the loss launch, with or without per-row temperatures
    /// (`sampler/kept.wgsl`: what `kept_partials.wgsl` left for it).
    Kept,
    /// A given kept set and the softcap.
    KeptSoftcap,
}

impl SamplerMap {
    /// Every map.
    pub const ALL: [SamplerMap; 5] = [
        SamplerMap::Off,
        SamplerMap::Temperatures,
        SamplerMap::Softcap,
        SamplerMap::Kept,
        SamplerMap::KeptSoftcap,
    ];

    /// The maps of a kernel that reads the logits themselves (not the kept pairs).
    pub const UNKEPT: [SamplerMap; 3] = [
        SamplerMap::Off,
        SamplerMap::Temperatures,
        SamplerMap::Softcap,
    ];

    /// The maps a kernel's modules are built with: the loss launch takes a kept set's
    /// (the pairs or the threshold), the other row kernels read the logits themselves.
    pub(super) fn of_kernel(kernel: super::Kernel) -> &'static [SamplerMap] {
        use super::Kernel;
        match kernel {
            Kernel::PolicyLoss => &SamplerMap::ALL,
            Kernel::RowPartials | Kernel::KeptPartials | Kernel::KeptSelect => &SamplerMap::UNKEPT,
            _ => &[SamplerMap::Off],
        }
    }

    /// The map of a call with (or without) a softcap and per-row temperatures.
    pub(crate) fn of(softcap: bool, temps: bool) -> Self {
        match (softcap, temps) {
            (true, _) => SamplerMap::Softcap,
            (false, true) => SamplerMap::Temperatures,
            (false, false) => SamplerMap::Off,
        }
    }

    /// The loss launch's map where a kept set was given.
    pub(crate) fn kept(self) -> Self {
        match self {
            SamplerMap::Softcap | SamplerMap::KeptSoftcap => SamplerMap::KeptSoftcap,
            _ => SamplerMap::Kept,
        }
    }

    /// The module binds the per-row temperatures, or the kept pairs (binding 8).
    pub(crate) fn binds_temps(self) -> bool {
        self != SamplerMap::Off
    }

    pub(super) fn suffix(self) -> &'static str {
        match self {
            SamplerMap::Off => "",
            SamplerMap::Temperatures => "/temps",
            SamplerMap::Softcap => "/softcap",
            SamplerMap::Kept => "/kept",
            SamplerMap::KeptSoftcap => "/kept+softcap",
        }
    }
}

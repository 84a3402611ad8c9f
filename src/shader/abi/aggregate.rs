//! The aggregation modes' codes of `shaders/aggregate.wgsl` (prepare's weights,
//! select's renormalised ones).

wgsl_consts! {
    pub(crate) AGGREGATION;
    /// The aggregation modes as aggregate.wgsl numbers them (prepare's weights,
    /// select's renormalised ones).
    pub(crate) AGG_TOKEN_MEAN: u32 = 0;
    pub(crate) AGG_SEQ_MEAN_TOKEN_MEAN: u32 = 1;
    pub(crate) AGG_SEQ_MEAN_TOKEN_SUM: u32 = 2;
    pub(crate) AGG_SEQ_MEAN_TOKEN_SUM_NORM: u32 = 3;
    pub(crate) AGG_TOKEN_SUM: u32 = 4;
}

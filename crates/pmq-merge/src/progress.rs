//! Progress reporting hooks (the CLI draws a bar; the library only calls these).

/// Receives progress events. Calls come from the merging thread, in order.
pub trait Progress: Sync {
    /// A pass over `total` tensors starts (TIES global trimming makes several passes).
    fn phase(&self, _name: &str, _total: usize) {}
    /// One tensor of the current pass is done.
    fn tensor_done(&self, _name: &str) {}
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {}

//! Progress hooks of a pipeline run: the library calls them, a front end draws them (the CLI
//! draws an indicatif bar; the benchmark logs).

/// Receives progress events, in order, from the thread that drives the blocks.
pub trait Progress: Sync {
    /// The run starts; `linears` will be quantized.
    fn start(&self, _linears: usize) {}
    /// What is being worked on now (a linear's name, a search).
    fn message(&self, _msg: &str) {}
    /// One linear is quantized.
    fn linear_done(&self, _name: &str) {}
    /// The run ended (successfully or not).
    fn finish(&self) {}
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {}

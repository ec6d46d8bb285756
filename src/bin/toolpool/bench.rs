//! `toolpool bench`.
use crate::Fatal;
use clap::Args;
/// Bench.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub tool: crate::tool::ToolArgs,
}
pub fn main(_a: BenchArgs) -> Result<i32, Fatal> { Ok(0) }

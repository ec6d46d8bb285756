//! `toolpool check`.
use crate::Fatal;
use clap::Args;
/// Check.
#[derive(Args, Debug)]
pub struct CheckArgs {
}
pub fn main(_a: CheckArgs) -> Result<i32, Fatal> { Ok(0) }

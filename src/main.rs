mod change;
mod lsn;
mod pipeline;
mod protocol;
fn main() {}

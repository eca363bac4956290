mod lsn;
mod protocol;
fn main() {}

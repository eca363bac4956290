//! From the source's change stream to the sink, in order, confirming
//! only what the sink made durable.

pub mod driver;

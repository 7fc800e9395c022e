//! One parse function per target.

pub mod kiali;
pub mod kubernetes;
pub mod prometheus;

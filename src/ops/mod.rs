pub mod elementwise;
pub mod attention;
pub mod temporal_attention;
